/*
 * fuzz_h2.c: the HTTP/2 input path. The same harness as fuzz_request.c,
 * with the client preface written first, so that every input is taken as
 * HTTP/2 frames (h2c with prior knowledge): nghttp2's session, our
 * callbacks, flood limits, streams to requests, answers.
 */
#define FUZZ_PREFIX	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#include "fuzz_request.c"
