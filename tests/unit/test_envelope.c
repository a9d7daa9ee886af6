/*
 * test_envelope.c: the JSON checker, how bodies are embedded in the JSON
 * envelope, and the envelope built from legs alone. jansson, which the
 * envelope no longer uses, is the reference here: what it reads back, and
 * what it calls JSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "config.h"
#include "envelope.h"
#include "leg.h"

/* The member envelope_add_body() writes, as a NUL-terminated string. */
static char *
embed_text(const char *ctype, const char *body, size_t len)
{
	struct evbuffer	*b;
	char		*s;
	size_t		 n;

	assert_non_null(b = evbuffer_new());
	assert_int_equal(envelope_add_body(b, ctype, ctype ? strlen(ctype) : 0,
	    (const unsigned char *)body, len), 0);
	n = evbuffer_get_length(b);
	assert_non_null(s = malloc(n + 1));
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return (s);
}

/* The member written for body is exactly want. */
static void
assert_embedded(const char *ctype, const char *body, size_t len,
    const char *want)
{
	char	*m = embed_text(ctype, body, len);

	assert_string_equal(m, want);
	free(m);
}

/* That member in braces, read back by jansson. */
static json_t *
embed(const char *ctype, const char *body, size_t len)
{
	json_error_t	 err;
	json_t		*o;
	char		*m, *s;

	m = embed_text(ctype, body, len);
	assert_true(asprintf(&s, "{%s}", m) > 0);
	o = json_loads(s, JSON_ALLOW_NUL, &err);
	if (o == NULL)
		fail_msg("%s: %s", s, err.text);
	free(m);
	free(s);
	return (o);
}

static int
valid(const char *s, size_t len)
{
	return (envelope_json_valid((const unsigned char *)s, len));
}

/* Every rule of the checker, one text each. */
static void
test_json_valid_table(void **state)
{
#define T(s)	{ s, sizeof(s) - 1 }
	static const struct { const char *s; size_t len; } ok[] = {
		T("0"), T("-0"), T("1"), T("-1"), T("123"), T("1.5"),
		T("-0.0"), T("1e5"), T("1E5"), T("1e+5"), T("1e-5"),
		T("1.25e-05"), T("0e0"), T("0.0E+00"),
		/* Out of jansson's range, still JSON. */
		T("1e400"), T("-1e400"), T("123456789012345678901234567890"),
		T("9223372036854775808"), T("1e-400"),
		T("true"), T("false"), T("null"),
		T("\"\""), T("\"abc\""), T("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""),
		T("\"\\u0000\""), T("\"a\\u0000b\""), T("\"\\u00e9\\u00E9\""),
		T("\"\\ud83d\\ude00\""), T("\"\\uD83D\\uDE00\""),
		T("\"\\udbff\\udfff\""), T("\"\\uffff\""),
		T("\"caf\xc3\xa9\""), T("\"\xe2\x82\xac\""),
		T("\"\xf0\x9f\x98\x80\""), T("\"\xf4\x8f\xbf\xbf\""),
		T("\"\xed\x9f\xbf\""), T("\"\xee\x80\x80\""),
		T("\"\xef\xbb\xbf\""), T("\"\x7f\""),
		T("[]"), T("{}"), T("[1,2,3]"), T("[[],[[]],{}]"),
		T("{\"a\":1}"), T("{\"a\":{\"b\":[true,false,null]}}"),
		T("{\"a\":1,\"a\":2}"), T("{\"\":\"\"}"), T("{\"a\\u0000\":1}"),
		T(" 1"), T("1 "), T(" \t\r\n[ 1 , 2 ]\n"), T("{ \"a\" : 1 , \"b\" : [ ] }"),
		T("[\"]\",\"}\",\",\"]"),
	};
	static const struct { const char *s; size_t len; } bad[] = {
		T(""), T(" "), T("\n\t"),
		/* Numbers. */
		T("-"), T("+1"), T("01"), T("-01"), T("00"), T(".5"), T("1."),
		T("1.e5"), T("1e"), T("1e+"), T("1E-"), T("--1"), T("0x10"),
		T("1.5.5"), T("Infinity"), T("NaN"), T("-Infinity"), T("1 2"),
		/* Literals. */
		T("tru"), T("truex"), T("True"), T("nul"), T("nulll"), T("f"),
		/* Strings. */
		T("\""), T("\"abc"), T("'a'"), T("\"\\\""), T("\"\\x\""),
		T("\"\\u12\""), T("\"\\u12g4\""), T("\"\\U0041\""), T("\"\\\0\""),
		T("\"\\ud800\""), T("\"\\udc00\""), T("\"\\ud800x\""),
		T("\"\\ud800\\u0041\""), T("\"\\ud800\\ud800\""),
		T("\"\\udc00\\ud800\""), T("\"\\ud800\\\""), T("\"\\ud800\\u\""),
		T("\"a\nb\""), T("\"\t\""), T("\"\x01\""), T("\"\x1f\""),
		T("\"a\0b\""),
		/* UTF-8. */
		T("\"\x80\""), T("\"\xbf\""), T("\"\xc0\x80\""), T("\"\xc1\xbf\""),
		T("\"\xc3\""), T("\"\xc3\x28\""), T("\"\xe0\x80\x80\""),
		T("\"\xe0\x9f\xbf\""), T("\"\xed\xa0\x80\""), T("\"\xed\xbf\xbf\""),
		T("\"\xe2\x82\""), T("\"\xf0\x80\x80\x80\""),
		T("\"\xf0\x8f\xbf\xbf\""), T("\"\xf4\x90\x80\x80\""),
		T("\"\xf5\x80\x80\x80\""), T("\"\xf0\x9f\x98\""), T("\"\xff\""),
		T("\"\xfe\""), T("\xef\xbb\xbf" "1"), T("\xc3\xa9"),
		/* Structure. */
		T("["), T("]"), T("{"), T("}"), T("[1"), T("[1,"), T("[1,]"),
		T("[,1]"), T("[1 2]"), T("{\"a\"}"), T("{\"a\":}"), T("{\"a\" 1}"),
		T("{\"a\":1,}"), T("{a:1}"), T("{1:1}"), T("{\"a\":1]"), T("[1}"),
		T("{,}"), T("[]]"), T("{}}"), T("[][]"), T("1,"), T("{\"a\":1 \"b\":2}"),
		/* Trailing garbage, and bytes that are not JSON. */
		T("1x"), T("{}x"), T("\"a\"\""), T("1\0"), T("\0"), T("null\0"),
		T("[1]\x01"), T("/* c */1"), T("1 // c"),
	};
#undef T
	size_t	i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (!valid(ok[i].s, ok[i].len))
			fail_msg("valid text %zu rejected: %s", i, ok[i].s);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (valid(bad[i].s, bad[i].len))
			fail_msg("invalid text %zu accepted: %s", i, bad[i].s);
}

/* n containers of kind open/close, with mid inside. */
static char *
nest(size_t n, char open, char close, const char *mid)
{
	size_t	 m = strlen(mid), i;
	char	*s;

	assert_non_null(s = malloc(2 * n + m + 1));
	for (i = 0; i < n; i++)
		s[i] = open;
	memcpy(s + n, mid, m);
	for (i = 0; i < n; i++)
		s[n + m + i] = close;
	s[2 * n + m] = '\0';
	return (s);
}

/* jansson's limit, which counts every value (a scalar too). */
static void
test_json_depth(void **state)
{
	static const struct {
		size_t n; const char *mid; int ok;
	} v[] = {
		{ 2048, "", 1 }, { 2049, "", 0 }, { 2047, "1", 1 },
		{ 2048, "1", 0 }, { 2047, "{}", 1 }, { 2047, "{\"a\":1}", 0 },
		{ 2046, "{\"a\":1}", 1 }, { 100000, "", 0 },
	};
	json_t	*j;
	char	*s;
	size_t	 i;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		s = nest(v[i].n, '[', ']', v[i].mid);
		assert_int_equal(valid(s, strlen(s)), v[i].ok);
		/* jansson agrees. */
		j = json_loadb(s, strlen(s), JSON_DECODE_ANY, NULL);
		assert_int_equal(j != NULL, v[i].ok);
		json_decref(j);
		free(s);
	}
	/* Objects count alike: {"a":{"a":...}}, 2048 deep. */
	s = malloc(2048 * 6 + 3);
	assert_non_null(s);
	for (i = 0; i < 2047; i++)
		memcpy(s + 5 * i, "{\"a\":", 5);
	memcpy(s + 5 * i, "{}", 2);
	memset(s + 5 * i + 2, '}', 2047);
	assert_true(valid(s, 5 * 2047 + 2 + 2047));
	memcpy(s + 5 * i, "[]", 2);
	assert_true(valid(s, 5 * 2047 + 2 + 2047));
	free(s);
	/* A container left open at the limit is not closed by accident. */
	s = nest(2048, '[', ']', "");
	s[2048 + 2047] = '}';
	assert_false(valid(s, strlen(s)));
	free(s);
}

static void
test_is_text(void **state)
{
	assert_true(envelope_is_text((const unsigned char *)"", 0));
	assert_true(envelope_is_text((const unsigned char *)"a\x7f\xc3\xa9", 4));
	assert_true(envelope_is_text((const unsigned char *)
	    "\xf4\x8f\xbf\xbf", 4));
	assert_false(envelope_is_text((const unsigned char *)"a\0b", 3));
	assert_false(envelope_is_text((const unsigned char *)"\xc3", 1));
	assert_false(envelope_is_text((const unsigned char *)"\xed\xa0\x80", 3));
	assert_false(envelope_is_text((const unsigned char *)"\xc0\xae", 2));
	assert_false(envelope_is_text((const unsigned char *)
	    "\xf4\x90\x80\x80", 4));
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

	/* As it came, less the whitespace around it. */
	assert_embedded("application/json", " \r\n\t{\"a\" : [1,2.50] }\n\n",
	    23, "\"body\":{\"a\" : [1,2.50] }");
	assert_embedded("application/json", "\"x\" ", 4, "\"body\":\"x\"");
	/* Beyond jansson's numbers, and duplicate keys: verbatim. */
	assert_embedded("application/json",
	    "[1e400,123456789012345678901234567890]", 38,
	    "\"body\":[1e400,123456789012345678901234567890]");
	assert_embedded("application/json", "{\"a\":1,\"a\":2}", 13,
	    "\"body\":{\"a\":1,\"a\":2}");
}

static void
test_invalid_json_is_a_string(void **state)
{
	json_t	*o = embed("application/json", "{not json", 9);
	json_t	*b = json_object_get(o, "body");
	char	*s;

	assert_true(json_is_string(b));
	assert_string_equal(json_string_value(b), "{not json");
	json_decref(o);

	/* Whitespace alone, and too deep: strings too. */
	o = embed("application/json", " \n", 2);
	assert_string_equal(json_string_value(json_object_get(o, "body")), " \n");
	json_decref(o);
	s = nest(3000, '[', ']', "");
	o = embed("application/json", s, 6000);
	assert_string_equal(json_string_value(json_object_get(o, "body")), s);
	json_decref(o);
	free(s);
}

static void
test_json_text_without_json_type_is_a_string(void **state)
{
	json_t	*o = embed("text/plain", "{\"a\":1}", 7);

	assert_true(json_is_string(json_object_get(o, "body")));
	assert_string_equal(json_string_value(json_object_get(o, "body")),
	    "{\"a\":1}");
	json_decref(o);
	o = embed(NULL, "[1]", 3);
	assert_true(json_is_string(json_object_get(o, "body")));
	json_decref(o);
}

static void
test_text_body(void **state)
{
	static const char	 html[] = "caf\xc3\xa9 <b>\"x\"</b>\n\\\t\x01\x7f";
	json_t			*o = embed("text/html", html, sizeof html - 1);

	assert_string_equal(json_string_value(json_object_get(o, "body")), html);
	json_decref(o);
	o = embed(NULL, "", 0);
	assert_string_equal(json_string_value(json_object_get(o, "body")), "");
	json_decref(o);
	/* Empty JSON is no JSON: the empty string, as before. */
	o = embed("application/json", "", 0);
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
	/* A raw NUL in a JSON string: base64, as with jansson. */
	assert_embedded("application/json", "\"a\0\"", 4,
	    "\"body_base64\":\"ImEAIg==\"");
	/* Overlong and surrogate UTF-8 are not text. */
	o = embed("text/plain", "\xc0\xae", 2);
	assert_non_null(json_object_get(o, "body_base64"));
	json_decref(o);
	o = embed("text/plain", "\xed\xa0\x80", 3);
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
	char	*s, *m;
	size_t	 i;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		s = envelope_base64((const unsigned char *)v[i].in,
		    strlen(v[i].in));
		assert_string_equal(s, v[i].out);
		free(s);
	}
	/* The envelope's, written in place: the same, also past a chunk. */
	assert_non_null(s = malloc(5000));
	for (i = 0; i < 5000; i++)
		s[i] = (char)(i * 7 + 0x80);
	for (i = 4990; i < 5000; i++) {
		char	*want, *got;

		want = envelope_base64((const unsigned char *)s, i);
		m = embed_text("application/octet-stream", s, i);
		assert_true(asprintf(&got, "\"body_base64\":\"%s\"", want) > 0);
		assert_string_equal(m, got);
		free(want);
		free(got);
		free(m);
	}
	free(s);
}

/* The route a..g and a leg of each kind; see test_build_from_legs. */
struct fixture {
	struct upstream_conf	 up[7], *ups[7];
	struct route_conf	 rt;
	struct leg		 legs[6];
};

static void
fixture_init(struct fixture *f)
{
	static char	*names[] = { "a", "b", "c", "d", "e", "f", "g" };
	size_t		 i;

	memset(f, 0, sizeof *f);
	for (i = 0; i < 7; i++) {
		f->up[i].name = names[i];
		f->ups[i] = &f->up[i];
	}
	f->rt.upstreams = f->ups;
	f->rt.nupstreams = 7;
	for (i = 0; i < 6; i++) {
		http_headers_init(&f->legs[i].headers);
		f->legs[i].state = LEG_DONE;
	}
	/* Legs in another order than the route's; g has none. */
	f->legs[0].up = f->ups[1];
	f->legs[0].outcome = LEG_FAILED;
	f->legs[0].error = XFER_TIMEOUT;
	f->legs[0].detail = "timed out";
	f->legs[1].up = f->ups[0];
	f->legs[1].outcome = LEG_OK;
	f->legs[1].status = 200;
	assert_int_equal(http_headers_add(&f->legs[1].headers, "content-type",
	    12, "application/json", 16), 0);
	assert_non_null(f->legs[1].body = evbuffer_new());
	evbuffer_add(f->legs[1].body, "{\"k\": 1}\n", 9);
	f->legs[2].up = f->ups[2];
	f->legs[2].state = LEG_RUNNING;
	f->legs[3].up = f->ups[3];
	f->legs[3].outcome = LEG_CANCELLED;
	cancel_init(&f->legs[3].cancel, NULL, NULL, NULL);
	cancel_flip(&f->legs[3].cancel, CANCEL_DEADLINE);
	f->legs[4].up = f->ups[4];
	f->legs[4].outcome = LEG_STATUS;
	f->legs[4].status = 503;
	assert_non_null(f->legs[4].body = evbuffer_new());
	evbuffer_add(f->legs[4].body, "busy", 4);
	f->legs[5].up = f->ups[5];
	f->legs[5].state = LEG_IDLE;
}

static void
fixture_free(struct fixture *f)
{
	size_t	i;

	for (i = 0; i < 6; i++) {
		http_headers_clear(&f->legs[i].headers);
		if (f->legs[i].body != NULL)
			evbuffer_free(f->legs[i].body);
	}
}

/* The whole envelope, from legs alone: route order, every kind of end. */
static void
test_build_from_legs(void **state)
{
	static const char	 want[] =
	    "{\"a\":{\"status\":200,\"body\":{\"k\": 1}},"
	    "\"b\":{\"error\":\"timeout\",\"reason\":\"timed out\"},"
	    "\"c\":{\"error\":\"cancelled\",\"reason\":\"superseded\"},"
	    "\"d\":{\"error\":\"cancelled\",\"reason\":\"deadline\"},"
	    "\"e\":{\"error\":\"status\",\"status\":503,"
	    "\"reason\":\"HTTP 503\",\"body\":\"busy\"},"
	    "\"f\":{\"error\":\"cancelled\",\"reason\":\"not_sent\"},"
	    "\"g\":{\"error\":\"cancelled\",\"reason\":\"not_sent\"}}\n";
	struct fixture		 f;
	struct evbuffer		*out;
	size_t			 len;
	char			*got;

	fixture_init(&f);
	assert_non_null(out = envelope_build(&f.rt, f.legs, 6));
	len = evbuffer_get_length(out);
	got = (char *)evbuffer_pullup(out, -1);
	assert_int_equal(len, sizeof want - 1);
	assert_memory_equal(got, want, len);
	evbuffer_free(out);
	fixture_free(&f);
}

/* The same legs, read back by jansson member by member. */
static void
test_build_parsed_back(void **state)
{
	struct fixture		 f;
	struct evbuffer		*out;
	json_error_t		 err;
	json_t			*env, *m, *want;
	const char		*key;
	size_t			 len, i;
	static const char	*order[] = { "a", "b", "c", "d", "e", "f", "g" };

	fixture_init(&f);
	/* Names and details that need escaping, and one of each body. */
	f.up[1].name = "b\"\\\x01\xc3\xa9";
	f.legs[0].detail = "Failed to connect: \"x\"\n";
	f.legs[0].error = XFER_CONNECT;
	f.legs[3].outcome = LEG_CANCELLED;
	evbuffer_drain(f.legs[4].body, 4);
	evbuffer_add(f.legs[4].body, "\xff\x00", 2);
	f.legs[4].status = 404;
	assert_non_null(out = envelope_build(&f.rt, f.legs, 6));
	len = evbuffer_get_length(out);
	env = json_loadb((char *)evbuffer_pullup(out, -1), len, 0, &err);
	if (env == NULL)
		fail_msg("%s", err.text);
	assert_int_equal(((char *)evbuffer_pullup(out, -1))[len - 1], '\n');
	assert_int_equal(json_object_size(env), 7);
	i = 0;
	json_object_foreach(env, key, m) {
		if (i == 1)
			assert_string_equal(key, f.up[1].name);
		else
			assert_string_equal(key, order[i]);
		i++;
	}
	want = json_pack("{s:i, s:{s:i}}", "status", 200, "body", "k", 1);
	assert_true(json_equal(json_object_get(env, "a"), want));
	json_decref(want);
	want = json_pack("{s:s, s:s}", "error", transfer_error_name(XFER_CONNECT),
	    "reason", "Failed to connect: \"x\"\n");
	assert_true(json_equal(json_object_get(env, f.up[1].name), want));
	json_decref(want);
	want = json_pack("{s:s, s:s}", "error", "cancelled", "reason",
	    "superseded");
	assert_true(json_equal(json_object_get(env, "c"), want));
	json_decref(want);
	want = json_pack("{s:s, s:s}", "error", "cancelled", "reason",
	    "deadline");
	assert_true(json_equal(json_object_get(env, "d"), want));
	json_decref(want);
	want = json_pack("{s:s, s:i, s:s, s:s}", "error", "status", "status",
	    404, "reason", "HTTP 404", "body_base64", "/wA=");
	assert_true(json_equal(json_object_get(env, "e"), want));
	json_decref(want);
	want = json_pack("{s:s, s:s}", "error", "cancelled", "reason",
	    "not_sent");
	assert_true(json_equal(json_object_get(env, "f"), want));
	assert_true(json_equal(json_object_get(env, "g"), want));
	json_decref(want);
	json_decref(env);
	evbuffer_free(out);

	/* A route with no upstreams is still an object. */
	f.rt.nupstreams = 0;
	assert_non_null(out = envelope_build(&f.rt, f.legs, 0));
	assert_int_equal(evbuffer_get_length(out), 3);
	assert_memory_equal(evbuffer_pullup(out, -1), "{}\n", 3);
	evbuffer_free(out);
	fixture_free(&f);
}

/*
 * Differential: the checker against jansson's json_loadb(JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) over generated and mutated texts. They agree but where
 * jansson cannot hold a number (json_error_numeric_overflow) or a NUL in
 * a key (json_error_null_byte_in_key): JSON, and valid here; and where
 * jansson takes a raw NUL byte right after a number or a literal ("1\0",
 * "[true\0]") for the end of its input buffer and skips it: not JSON, and
 * not valid here. When both take a text, the body embedded from it reads
 * back as the same value.
 */
static uint64_t	rng = 0x9e3779b97f4a7c15ULL;

static unsigned
rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((unsigned)(rng >> 11) % n);
}

struct text {
	char	buf[4096];
	size_t	len;
};

static void
put(struct text *t, const char *s, size_t n)
{
	if (t->len + n <= sizeof t->buf) {
		memcpy(t->buf + t->len, s, n);
		t->len += n;
	}
}

static void
put_str(struct text *t, const char *s)
{
	put(t, s, strlen(s));
}

static void
gen_ws(struct text *t)
{
	static const char	*ws[] = { "", "", "", " ", "\n", "\r\n\t ", "\t" };

	put_str(t, ws[rnd(7)]);
}

static void
gen_string(struct text *t)
{
	static const char	*piece[] = {
		"a", "xyz", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n",
		"\\r", "\\t", "\\u0000", "\\u0041", "\\u00e9", "\\uFFFF",
		"\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\xc3\xa9", "\xe2\x82\xac",
		"\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "\x7f",
		"\xef\xbf\xbf", "]", "}", ",", ":",
	};
	unsigned	 n = rnd(5);

	put(t, "\"", 1);
	while (n-- > 0)
		put_str(t, piece[rnd(sizeof piece / sizeof piece[0])]);
	put(t, "\"", 1);
}

static void
gen_number(struct text *t)
{
	static const char	*num[] = {
		"0", "-0", "1", "-1", "42", "0.5", "-12.25", "1e3", "1E-3",
		"2.5e+10", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "1e400", "-1e309", "1e-400", "1.7976931348623157e308",
		"123456789012345678901234567890", "0.000001",
	};

	put_str(t, num[rnd(sizeof num / sizeof num[0])]);
}

static void
gen_value(struct text *t, int depth)
{
	unsigned	i, n;

	gen_ws(t);
	switch (depth > 4 ? rnd(5) : rnd(7)) {
	case 0:
		gen_string(t);
		break;
	case 1:
	case 2:
		gen_number(t);
		break;
	case 3:
		put_str(t, rnd(2) ? "true" : "false");
		break;
	case 4:
		put_str(t, "null");
		break;
	case 5:
		put(t, "[", 1);
		n = rnd(4);
		for (i = 0; i < n; i++) {
			if (i > 0)
				put(t, ",", 1);
			gen_value(t, depth + 1);
		}
		gen_ws(t);
		put(t, "]", 1);
		break;
	default:
		put(t, "{", 1);
		n = rnd(4);
		for (i = 0; i < n; i++) {
			if (i > 0)
				put(t, ",", 1);
			gen_ws(t);
			gen_string(t);
			gen_ws(t);
			put(t, ":", 1);
			gen_value(t, depth + 1);
		}
		gen_ws(t);
		put(t, "}", 1);
	}
	gen_ws(t);
}

/* One byte changed, inserted or removed, from bytes that matter to JSON. */
static void
mutate(struct text *t)
{
	static const char	 alpha[] = "{}[]\",:\\u0123456789abcdefABCDEF"
	    "eE+-. \t\n\rtruefalsenull\x00\x01\x1f\x7f\x80\xbf\xc0\xc2\xc3"
	    "\xdf\xe0\xed\xef\xf0\xf4\xf5\xff";
	size_t			 at;
	char			 c = alpha[rnd(sizeof alpha - 1)];

	at = t->len ? rnd(t->len + 1) : 0;
	switch (rnd(3)) {
	case 0:
		if (at < t->len)
			t->buf[at] = c;
		break;
	case 1:
		if (t->len < sizeof t->buf) {
			memmove(t->buf + at + 1, t->buf + at, t->len - at);
			t->buf[at] = c;
			t->len++;
		}
		break;
	default:
		if (at < t->len) {
			memmove(t->buf + at, t->buf + at + 1, t->len - at - 1);
			t->len--;
		}
	}
}

static int
excused(const json_error_t *err)
{
#if JANSSON_VERSION_HEX >= 0x020b00
	return (json_error_code(err) == json_error_numeric_overflow ||
	    json_error_code(err) == json_error_null_byte_in_key);
#else
	return (strstr(err->text, "too big") != NULL ||
	    strstr(err->text, "real number overflow") != NULL ||
	    strstr(err->text, "NUL byte in object key") != NULL);
#endif
}

/* t less the NUL bytes jansson skips, valid here. */
static int
nul_skipped(const struct text *t)
{
	struct text	u;
	size_t		i;
	unsigned char	c;
	int		skipped = 0;

	for (i = u.len = 0; i < t->len; i++) {
		c = i > 0 ? (unsigned char)t->buf[i - 1] : 0;
		if (t->buf[i] == '\0' && ((c >= '0' && c <= '9') ||
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			skipped = 1;
			continue;
		}
		u.buf[u.len++] = t->buf[i];
	}
	return (skipped &&
	    envelope_json_valid((const unsigned char *)u.buf, u.len));
}

static void
differ(const struct text *t, int *nvalid, int *nexcused)
{
	json_error_t	 err;
	json_t		*ref, *o;
	int		 mine;

	mine = envelope_json_valid((const unsigned char *)t->buf, t->len);
	ref = json_loadb(t->buf, t->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (mine && ref == NULL && excused(&err)) {
		(*nexcused)++;
		return;
	}
	if (!mine && ref != NULL && nul_skipped(t)) {
		json_decref(ref);
		(*nexcused)++;
		return;
	}
	if (mine != (ref != NULL))
		fail_msg("disagree (mine %d, jansson %s) on %zu bytes: %.*s",
		    mine, ref ? "ok" : err.text, t->len, (int)t->len, t->buf);
	if (ref == NULL)
		return;
	(*nvalid)++;
	o = embed("application/json", t->buf, t->len);
	if (!json_equal(json_object_get(o, "body"), ref))
		fail_msg("embedded differs: %.*s", (int)t->len, t->buf);
	json_decref(o);
	json_decref(ref);
}

static void
test_differential(void **state)
{
	struct text	 t, m;
	int		 i, j, nvalid = 0, nexcused = 0, n = 0;

	for (i = 0; i < 2500; i++) {
		t.len = 0;
		gen_value(&t, 0);
		differ(&t, &nvalid, &nexcused);
		n++;
		for (j = 0; j < 3; j++) {
			m = t;
			mutate(&m);
			if (rnd(2))
				mutate(&m);
			differ(&m, &nvalid, &nexcused);
			n++;
		}
	}
	/* The generator is worth something: a fair share of each. */
	print_message("%d texts: %d JSON to both, %d to neither, %d excused\n",
	    n, nvalid, n - nvalid - nexcused, nexcused);
	assert_true(nvalid > n / 10);
	assert_true(n - nvalid - nexcused > n / 2);
	assert_true(nexcused > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_valid_table),
		cmocka_unit_test(test_json_depth),
		cmocka_unit_test(test_is_text),
		cmocka_unit_test(test_json_types),
		cmocka_unit_test(test_json_body_embedded),
		cmocka_unit_test(test_invalid_json_is_a_string),
		cmocka_unit_test(test_json_text_without_json_type_is_a_string),
		cmocka_unit_test(test_text_body),
		cmocka_unit_test(test_binary_is_base64),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_build_from_legs),
		cmocka_unit_test(test_build_parsed_back),
		cmocka_unit_test(test_differential),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
