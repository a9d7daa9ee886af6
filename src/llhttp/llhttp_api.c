/* llhttp is compiled from the generated C the system ships (see configure.ac);
 * nothing of it lives in this repository. */
#include "api.c"
