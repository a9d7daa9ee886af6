/*
 * fuzz_config.c: any text as a configuration file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct config	*conf;
	char		*text, *errors = NULL;

	if ((text = malloc(len + 1)) == NULL)
		return (0);
	memcpy(text, data, len);
	text[len] = '\0';
	conf = config_load_string("fuzz.ini", text, &errors);
	if (conf != NULL) {
		/* Exercise what the daemon does with a loaded one. */
		config_find_route(conf, "/", 1);
		config_find_route(conf, "/api/x", 6);
		config_unref(conf);
	}
	free(errors);
	free(text);
	return (0);
}
