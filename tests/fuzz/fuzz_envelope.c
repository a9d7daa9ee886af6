/*
 * fuzz_envelope.c: any bytes as a JSON-typed upstream body. The envelope's
 * JSON checker must agree with jansson's json_loadb(JSON_DECODE_ANY |
 * JSON_ALLOW_NUL), but where the checker is right and jansson is not (see
 * test_envelope.c's test_differential): numbers jansson cannot hold and a
 * NUL in a key are JSON; a raw NUL byte after a number or a literal, which
 * jansson skips, is not. Whatever the body, the member written for it reads
 * back with jansson, as the same value when the body was JSON.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "envelope.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#if JANSSON_VERSION_HEX >= 0x020b00
#define ERR_IS(err, code, text)	(json_error_code(err) == (code))
#else
#define ERR_IS(err, code, text)	(strstr((err)->text, (text)) != NULL)
#endif

static int
excused(const json_error_t *err)
{
	return (ERR_IS(err, json_error_numeric_overflow, "too big") ||
	    ERR_IS(err, json_error_numeric_overflow, "real number overflow") ||
	    ERR_IS(err, json_error_null_byte_in_key, "NUL byte in object key"));
}

/* The input less the NUL bytes jansson skips is valid to the checker. */
static int
nul_skipped(const uint8_t *data, size_t len)
{
	uint8_t	*u, c;
	size_t	 i, n = 0;
	int	 skipped = 0, ok;

	if ((u = malloc(len ? len : 1)) == NULL)
		abort();
	for (i = 0; i < len; i++) {
		c = i > 0 ? data[i - 1] : 0;
		if (data[i] == '\0' && ((c >= '0' && c <= '9') ||
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			skipped = 1;
			continue;
		}
		u[n++] = data[i];
	}
	ok = skipped && envelope_json_valid(u, n);
	free(u);
	return (ok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct evbuffer	*b;
	json_error_t	 err;
	json_t		*ref, *o;
	int		 mine;

	mine = envelope_json_valid(data, len);
	ref = json_loadb((const char *)data, len,
	    JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (mine != (ref != NULL) && !(mine && excused(&err)) &&
	    !(!mine && nul_skipped(data, len))) {
		fprintf(stderr, "checker %d, jansson %s\n", mine,
		    ref ? "ok" : err.text);
		abort();
	}

	/* The member, in braces, is JSON; the same value when it was. */
	if ((b = evbuffer_new()) == NULL)
		abort();
	evbuffer_add(b, "{", 1);
	if (envelope_add_body(b, "application/json", 16, data, len) == -1)
		abort();
	evbuffer_add(b, "}", 1);
	o = json_loadb((const char *)evbuffer_pullup(b, -1),
	    evbuffer_get_length(b), JSON_ALLOW_NUL, &err);
	/* Too deep for jansson once inside {"body":...}: 2047 or 2048. */
	if (o == NULL && !(mine &&
	    ERR_IS(&err, json_error_stack_overflow, "maximum parsing depth")) &&
	    !(mine && excused(&err))) {
		fprintf(stderr, "envelope member not JSON: %s\n", err.text);
		abort();
	}
	if (o != NULL && mine && ref != NULL &&
	    !json_equal(json_object_get(o, "body"), ref)) {
		fprintf(stderr, "embedded body differs\n");
		abort();
	}
	json_decref(o);
	json_decref(ref);
	evbuffer_free(b);
	return (0);
}
