/*
 * test_envelope.c: how bodies are embedded in the JSON envelope, and the
 * envelope built from legs alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "config.h"
#include "envelope.h"
#include "leg.h"

static json_t *
embed(const char *ctype, const char *body, size_t len)
{
	json_t	*o = json_object();

	assert_non_null(o);
	assert_int_equal(envelope_add_body(o, ctype, ctype ? strlen(ctype) : 0,
	    (const unsigned char *)body, len), 0);
	return (o);
}

static void
test_json_types(void **state)
{
	assert_true(envelope_is_json_type("application/json", 16));
	assert_true(envelope_is_json_type("Application/JSON; charset=utf-8", 31));
	assert_true(envelope_is_json_type("application/problem+json", 24));
	assert_true(envelope_is_json_type("application/vnd.api+json;v=1", 28));
	assert_false(envelope_is_json_type("text/plain", 10));
	assert_false(envelope_is_json_type("application/jsonx", 17));
	assert_false(envelope_is_json_type("+json", 5));
	assert_false(envelope_is_json_type(NULL, 0));
}

static void
test_json_body_embedded(void **state)
{
	json_t	*o = embed("application/json", "{\"a\": [1, 2]}", 13);
	json_t	*b = json_object_get(o, "body");

	assert_true(json_is_object(b));
	assert_int_equal(json_integer_value(json_array_get(
	    json_object_get(b, "a"), 1)), 2);
	assert_null(json_object_get(o, "body_base64"));
	json_decref(o);

	/* An escaped NUL is valid JSON. */
	o = embed("application/json", "{\"s\": \"a\\u0000b\"}", 17);
	assert_true(json_is_object(json_object_get(o, "body")));
	json_decref(o);
	/* Any JSON value, not only objects. */
	o = embed("application/json", "42", 2);
	assert_true(json_is_integer(json_object_get(o, "body")));
	json_decref(o);
}

static void
test_invalid_json_is_a_string(void **state)
{
	json_t	*o = embed("application/json", "{not json", 9);
	json_t	*b = json_object_get(o, "body");

	assert_true(json_is_string(b));
	assert_string_equal(json_string_value(b), "{not json");
	json_decref(o);
}

static void
test_json_text_without_json_type_is_a_string(void **state)
{
	json_t	*o = embed("text/plain", "{\"a\":1}", 7);

	assert_true(json_is_string(json_object_get(o, "body")));
	json_decref(o);
}

static void
test_text_body(void **state)
{
	static const char	 html[] = "caf\xc3\xa9 <b>\"x\"</b>\n";
	json_t			*o = embed("text/html", html, sizeof html - 1);

	assert_string_equal(json_string_value(json_object_get(o, "body")),
	    "caf\xc3\xa9 <b>\"x\"</b>\n");
	json_decref(o);
	o = embed(NULL, "", 0);
	assert_string_equal(json_string_value(json_object_get(o, "body")), "");
	json_decref(o);
}

static void
test_binary_is_base64(void **state)
{
	json_t	*o = embed("application/octet-stream", "\xff\xfe\x00\x01", 4);

	assert_null(json_object_get(o, "body"));
	assert_string_equal(json_string_value(json_object_get(o,
	    "body_base64")), "//4AAQ==");
	json_decref(o);

	/* NUL in otherwise valid UTF-8 text is binary too. */
	o = embed("text/plain", "a\0b", 3);
	assert_string_equal(json_string_value(json_object_get(o,
	    "body_base64")), "YQBi");
	json_decref(o);

	/* JSON-typed but not UTF-8: not JSON, not a string. */
	o = embed("application/json", "\"\xc3\x28\"", 4);
	assert_non_null(json_object_get(o, "body_base64"));
	json_decref(o);
}

static void
test_base64(void **state)
{
	struct { const char *in, *out; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	char	*s;
	size_t	 i;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		s = envelope_base64((const unsigned char *)v[i].in,
		    strlen(v[i].in));
		assert_string_equal(s, v[i].out);
		free(s);
	}
}

/* The whole envelope, from legs alone: route order, every kind of end. */
static void
test_build_from_legs(void **state)
{
	static const char	 want[] =
	    "{\"a\":{\"status\":200,\"body\":{\"k\":1}},"
	    "\"b\":{\"error\":\"timeout\",\"reason\":\"timed out\"},"
	    "\"c\":{\"error\":\"cancelled\",\"reason\":\"superseded\"},"
	    "\"d\":{\"error\":\"cancelled\",\"reason\":\"deadline\"},"
	    "\"e\":{\"error\":\"status\",\"status\":503,"
	    "\"reason\":\"HTTP 503\",\"body\":\"busy\"},"
	    "\"f\":{\"error\":\"cancelled\",\"reason\":\"not_sent\"},"
	    "\"g\":{\"error\":\"cancelled\",\"reason\":\"not_sent\"}}\n";
	static char		*names[] = { "a", "b", "c", "d", "e", "f", "g" };
	struct upstream_conf	 up[7], *ups[7];
	struct route_conf	 rt;
	struct leg		 legs[6];
	struct evbuffer		*out;
	size_t			 i, len;
	char			*got;

	memset(up, 0, sizeof up);
	memset(&rt, 0, sizeof rt);
	memset(legs, 0, sizeof legs);
	for (i = 0; i < 7; i++) {
		up[i].name = names[i];
		ups[i] = &up[i];
	}
	rt.upstreams = ups;
	rt.nupstreams = 7;
	for (i = 0; i < 6; i++) {
		http_headers_init(&legs[i].headers);
		legs[i].state = LEG_DONE;
	}
	/* Legs in another order than the route's; g has none. */
	legs[0].up = ups[1];
	legs[0].outcome = LEG_FAILED;
	legs[0].error = XFER_TIMEOUT;
	legs[0].detail = "timed out";
	legs[1].up = ups[0];
	legs[1].outcome = LEG_OK;
	legs[1].status = 200;
	assert_int_equal(http_headers_add(&legs[1].headers, "content-type", 12,
	    "application/json", 16), 0);
	assert_non_null(legs[1].body = evbuffer_new());
	evbuffer_add(legs[1].body, "{\"k\": 1}", 8);
	legs[2].up = ups[2];
	legs[2].state = LEG_RUNNING;
	legs[3].up = ups[3];
	legs[3].outcome = LEG_CANCELLED;
	cancel_init(&legs[3].cancel, NULL, NULL, NULL);
	cancel_flip(&legs[3].cancel, CANCEL_DEADLINE);
	legs[4].up = ups[4];
	legs[4].outcome = LEG_STATUS;
	legs[4].status = 503;
	assert_non_null(legs[4].body = evbuffer_new());
	evbuffer_add(legs[4].body, "busy", 4);
	legs[5].up = ups[5];
	legs[5].state = LEG_IDLE;

	assert_non_null(out = envelope_build(&rt, legs, 6));
	len = evbuffer_get_length(out);
	got = (char *)evbuffer_pullup(out, -1);
	assert_int_equal(len, sizeof want - 1);
	assert_memory_equal(got, want, len);
	evbuffer_free(out);
	for (i = 0; i < 6; i++) {
		http_headers_clear(&legs[i].headers);
		if (legs[i].body != NULL)
			evbuffer_free(legs[i].body);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_types),
		cmocka_unit_test(test_json_body_embedded),
		cmocka_unit_test(test_invalid_json_is_a_string),
		cmocka_unit_test(test_json_text_without_json_type_is_a_string),
		cmocka_unit_test(test_text_body),
		cmocka_unit_test(test_binary_is_base64),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_build_from_legs),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
