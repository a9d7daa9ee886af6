/*
 * test_http.c: the header forwarding rules of SPEC section 3.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "http.h"

static void
add(struct http_headers *h, const char *name, const char *value)
{
	assert_int_equal(http_headers_add(h, name, strlen(name), value,
	    strlen(value)), 0);
}

static const char *
get(const struct http_headers *h, const char *name)
{
	const struct http_header	*e = http_headers_get(h, name);

	return (e ? e->value : NULL);
}

static size_t
count(const struct http_headers *h, const char *name)
{
	size_t	i, n = 0;

	for (i = 0; i < h->n; i++)
		if (strcasecmp(h->v[i].name, name) == 0)
			n++;
	return (n);
}

static void
forward_as(const struct http_headers *in, struct http_headers *out,
    uint64_t left, int trailers, int grpc)
{
	struct forward_info	fi = { .client_addr = "192.0.2.7",
	    .proto = "http", .request_id = "rid-1", .deadline_left_ms = left,
	    .trailers = trailers, .grpc = grpc };

	http_headers_init(out);
	assert_int_equal(http_forward_request_headers(in, &fi, out), 0);
}

static void
forward(const struct http_headers *in, struct http_headers *out,
    uint64_t left)
{
	forward_as(in, out, left, 0, 0);
}

/* Names and values stay put and whole while the list grows past its
 * chunks, with fields larger than a chunk and empty ones among them. */
static void
test_headers_storage(void **state)
{
	struct http_headers	 h;
	char			 name[32], value[64], *big;
	size_t			 i, bigsize = 100000;

	(void)state;
	http_headers_init(&h);
	assert_non_null(big = malloc(bigsize));
	memset(big, 'v', bigsize);
	assert_int_equal(http_headers_add(&h, "Big", 3, big, bigsize), 0);
	add(&h, "Empty", "");
	for (i = 0; i < 500; i++) {
		snprintf(name, sizeof name, "X-Field-%zu", i);
		snprintf(value, sizeof value, "value %zu of the list", i);
		add(&h, name, value);
	}
	assert_int_equal(h.n, 502);
	assert_int_equal(h.v[0].valuelen, bigsize);
	assert_memory_equal(h.v[0].value, big, bigsize);
	assert_int_equal(h.v[0].value[bigsize], '\0');
	assert_string_equal(get(&h, "empty"), "");
	for (i = 0; i < 500; i++) {
		snprintf(name, sizeof name, "X-Field-%zu", i);
		snprintf(value, sizeof value, "value %zu of the list", i);
		assert_string_equal(h.v[i + 2].name, name);
		assert_string_equal(h.v[i + 2].value, value);
		assert_int_equal(h.v[i + 2].valuelen, strlen(value));
	}
	http_headers_clear(&h);
	assert_int_equal(h.n, 0);
	add(&h, "After", "clear");
	assert_string_equal(get(&h, "after"), "clear");
	http_headers_clear(&h);
	free(big);
}

static void
test_hop_by_hop_dropped(void **state)
{
	struct http_headers	in, out;
	const char		*hop[] = { "Connection", "Keep-Alive", "TE",
				    "Trailer", "Transfer-Encoding", "Upgrade",
				    "Proxy-Authorization", "Proxy-Connection" };
	size_t			 i;

	http_headers_init(&in);
	for (i = 0; i < sizeof hop / sizeof hop[0]; i++)
		add(&in, hop[i], "x");
	add(&in, "Accept", "*/*");
	add(&in, "X-Custom", "kept");
	forward(&in, &out, 100);
	for (i = 0; i < sizeof hop / sizeof hop[0]; i++)
		assert_null(get(&out, hop[i]));
	assert_string_equal(get(&out, "accept"), "*/*");
	assert_string_equal(get(&out, "x-custom"), "kept");
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_connection_named_headers_dropped(void **state)
{
	struct http_headers	in, out;

	http_headers_init(&in);
	add(&in, "Connection", "keep-alive, X-Secret ,x-other");
	add(&in, "X-Secret", "s");
	add(&in, "X-Other", "o");
	add(&in, "X-Kept", "k");
	forward(&in, &out, 100);
	assert_null(get(&out, "x-secret"));
	assert_null(get(&out, "x-other"));
	assert_string_equal(get(&out, "x-kept"), "k");
	/* Not a substring match. */
	assert_false(http_is_hop_by_hop(&in, "X-Sec", 5));
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_host_and_forwarded(void **state)
{
	struct http_headers	in, out;

	http_headers_init(&in);
	add(&in, "Host", "api.example:8080");
	add(&in, "X-Forwarded-For", "203.0.113.1");
	add(&in, "X-Forwarded-For", "198.51.100.2, 198.51.100.3");
	add(&in, "X-Forwarded-Proto", "https");
	add(&in, "X-Forwarded-Host", "spoofed");
	forward(&in, &out, 100);
	/* The upstream's Host is set by the transfer, not copied. */
	assert_null(get(&out, "host"));
	assert_string_equal(get(&out, "x-forwarded-host"), "api.example:8080");
	assert_int_equal(count(&out, "x-forwarded-host"), 1);
	assert_string_equal(get(&out, "x-forwarded-for"),
	    "203.0.113.1, 198.51.100.2, 198.51.100.3, 192.0.2.7");
	assert_int_equal(count(&out, "x-forwarded-for"), 1);
	assert_string_equal(get(&out, "x-forwarded-proto"), "http");
	assert_int_equal(count(&out, "x-forwarded-proto"), 1);
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_request_id_and_deadline(void **state)
{
	struct http_headers	in, out;

	http_headers_init(&in);
	add(&in, "X-Request-Id", "from-client");
	add(&in, "X-Request-Deadline-Ms", "99999");
	forward(&in, &out, 250);
	/* The proxy's own values replace the client's (one of each). */
	assert_string_equal(get(&out, "x-request-id"), "rid-1");
	assert_int_equal(count(&out, "x-request-id"), 1);
	assert_string_equal(get(&out, "x-request-deadline-ms"), "250");
	assert_int_equal(count(&out, "x-request-deadline-ms"), 1);
	/* No Host in, no X-Forwarded-Host out. */
	assert_null(get(&out, "x-forwarded-host"));
	assert_string_equal(get(&out, "x-forwarded-for"), "192.0.2.7");
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_framing_headers_dropped(void **state)
{
	struct http_headers	in, out;

	http_headers_init(&in);
	add(&in, "Content-Length", "5");
	add(&in, "Expect", "100-continue");
	add(&in, "Content-Type", "text/plain");
	forward(&in, &out, 1);
	/* The transfer frames the body itself. */
	assert_null(get(&out, "content-length"));
	assert_null(get(&out, "expect"));
	assert_string_equal(get(&out, "content-type"), "text/plain");
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_response_headers(void **state)
{
	struct http_headers	msg;

	http_headers_init(&msg);
	add(&msg, "Connection", "close, X-Hop");
	assert_false(http_response_header_passes(&msg, "Connection", 10));
	assert_false(http_response_header_passes(&msg, "Transfer-Encoding", 17));
	assert_false(http_response_header_passes(&msg, "keep-alive", 10));
	assert_false(http_response_header_passes(&msg, "X-Hop", 5));
	assert_false(http_response_header_passes(&msg, "Content-Length", 14));
	assert_false(http_response_header_passes(&msg, "Date", 4));
	assert_true(http_response_header_passes(&msg, "Content-Type", 12));
	assert_true(http_response_header_passes(&msg, "Set-Cookie", 10));
	assert_true(http_response_header_passes(&msg, "Cache-Control", 13));
	http_headers_clear(&msg);
}

static void
test_client_deadline(void **state)
{
	struct http_headers	h;
	uint64_t		ms = 0;

	http_headers_init(&h);
	assert_false(http_client_deadline(&h, &ms));
	add(&h, "x-request-deadline-ms", "1500");
	assert_true(http_client_deadline(&h, &ms));
	assert_int_equal(ms, 1500);
	http_headers_clear(&h);
	add(&h, "X-Request-Deadline-Ms", "-5");
	assert_false(http_client_deadline(&h, &ms));
	http_headers_clear(&h);
	add(&h, "X-Request-Deadline-Ms", "12ms");
	assert_false(http_client_deadline(&h, &ms));
	http_headers_clear(&h);
	add(&h, "X-Request-Deadline-Ms", "0");
	assert_true(http_client_deadline(&h, &ms));
	assert_int_equal(ms, 0);
	http_headers_clear(&h);
}

static void
test_grpc_timeout(void **state)
{
	struct { const char *v; int ok; uint64_t ms; } cases[] = {
		{ "250m", 1, 250 }, { "2S", 1, 2000 }, { "1M", 1, 60000 },
		{ "1H", 1, 3600000 }, { "1500u", 1, 2 }, { "1n", 1, 1 },
		{ "0m", 1, 0 }, { "99999999m", 1, 99999999 },
		{ "123456789m", 0, 0 },		/* nine digits */
		{ "5", 0, 0 }, { "m", 0, 0 }, { "5x", 0, 0 }, { "5 m", 0, 0 },
		{ "-5m", 0, 0 }, { "", 0, 0 },
	};
	struct http_headers	h, out;
	uint64_t		ms;
	size_t			i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ms = 12345;
		assert_int_equal(http_grpc_timeout(cases[i].v,
		    strlen(cases[i].v), &ms), cases[i].ok);
		if (cases[i].ok)
			assert_int_equal(ms, cases[i].ms);
	}

	/* The shorter of the two spellings of a client's budget wins. */
	http_headers_init(&h);
	add(&h, "grpc-timeout", "300m");
	assert_true(http_client_deadline(&h, &ms));
	assert_int_equal(ms, 300);
	add(&h, "x-request-deadline-ms", "100");
	assert_true(http_client_deadline(&h, &ms));
	assert_int_equal(ms, 100);
	http_headers_clear(&h);
	http_headers_init(&h);
	add(&h, "x-request-deadline-ms", "1000");
	add(&h, "grpc-timeout", "2S");
	assert_true(http_client_deadline(&h, &ms));
	assert_int_equal(ms, 1000);

	/* Forwarded as the time left, once, in gRPC's own unit. */
	forward(&h, &out, 420);
	assert_int_equal(count(&out, "grpc-timeout"), 1);
	assert_string_equal(get(&out, "grpc-timeout"), "420m");
	http_headers_clear(&out);
	http_headers_clear(&h);

	/* Not made up for a client that sent none... */
	http_headers_init(&h);
	forward(&h, &out, 420);
	assert_null(get(&out, "grpc-timeout"));
	http_headers_clear(&out);
	/* ...but a gRPC call always carries the time it has left. */
	forward_as(&h, &out, 420, 1, 1);
	assert_string_equal(get(&out, "grpc-timeout"), "420m");
	http_headers_clear(&out);
	http_headers_clear(&h);
}

/* TE is hop-by-hop, but "trailers" crosses when the client takes them:
 * one TE: trailers, whatever else the client's TE listed. */
static void
test_te_trailers(void **state)
{
	struct http_headers	in, out;
	static const struct {
		const char	*v;
		int		 yes;
	} cases[] = {
		{ "trailers", 1 }, { "Trailers", 1 }, { "deflate, trailers", 1 },
		{ "trailers;q=1", 1 }, { " gzip ,trailers ", 1 },
		{ "deflate", 0 }, { "trailersx", 0 }, { "", 0 }, { "xtrailers", 0 },
	};
	size_t			i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		http_headers_init(&in);
		add(&in, "TE", cases[i].v);
		assert_int_equal(http_te_trailers(&in), cases[i].yes);
		http_headers_clear(&in);
	}
	http_headers_init(&in);
	assert_int_equal(http_te_trailers(&in), 0);
	add(&in, "TE", "deflate, trailers");
	forward_as(&in, &out, 100, 1, 0);
	assert_int_equal(count(&out, "te"), 1);
	assert_string_equal(get(&out, "te"), "trailers");
	http_headers_clear(&out);
	forward_as(&in, &out, 100, 0, 0);
	assert_null(get(&out, "te"));
	http_headers_clear(&out);
	http_headers_clear(&in);
}

static void
test_grpc_type(void **state)
{
	assert_true(http_is_grpc_type("application/grpc", 16));
	assert_true(http_is_grpc_type("Application/GRPC", 16));
	assert_true(http_is_grpc_type("application/grpc+proto", 22));
	assert_true(http_is_grpc_type("application/grpc;charset=utf-8", 30));
	assert_false(http_is_grpc_type("application/grpc-web", 20));
	assert_false(http_is_grpc_type("application/grp", 15));
	assert_false(http_is_grpc_type("application/json", 16));
}

static void
test_host_valid(void **state)
{
	const char	*good[] = { "", "example.com", "a.b-c_d~e", "127.0.0.1",
			    "h:80", "h:65535", "[::1]", "[::1]:8080",
			    "[2001:db8::a]:1", "xn--bcher-kva.example", "h:" };
	const char	*bad[] = { "a b", "h:8x", "h:123456", "[::1", "[]",
			    "[::1]x", "[zz::1]", ":80", "a/b", "a@b", "h\t",
			    "a\"b" };
	size_t		 i;

	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_true(http_host_valid(good[i], strlen(good[i])));
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(http_host_valid(bad[i], strlen(bad[i])));
	/* A NUL inside the counted value is not a host either. */
	assert_false(http_host_valid("a\0b", 3));
}

static void
test_field_syntax(void **state)
{
	assert_true(http_field_name_ok("X-Request-Id", 12));
	assert_true(http_field_name_ok("a!#$%&'*+-.^_`|~9", 17));
	assert_false(http_field_name_ok("", 0));
	assert_false(http_field_name_ok("X A", 3));
	assert_false(http_field_name_ok("X:A", 3));
	assert_false(http_field_name_ok("X\0A", 3));
	assert_false(http_field_name_ok("caf\xc3\xa9", 5));
	/* the name of "Name: value", up to the colon or the first bad byte */
	assert_int_equal(http_token_len("Content-Type: text/plain", 24), 12);
	assert_int_equal(http_token_len(" folded", 7), 0);
	assert_int_equal(http_token_len("X A: b", 6), 1);
	assert_int_equal(http_token_len("Name", 4), 4);
	assert_int_equal(http_token_len("Na\0me:", 6), 2);
	assert_true(http_field_value_ok("a b\tc", 5));
	assert_true(http_field_value_ok("", 0));
	assert_true(http_field_value_ok("caf\xc3\xa9", 5));
	assert_false(http_field_value_ok("a\rSet-Cookie: x", 16));
	assert_false(http_field_value_ok("a\nb", 3));
	assert_false(http_field_value_ok("a\0b", 3));
	assert_false(http_field_value_ok("a\x7f", 2));
}

static void
test_long_forwarded_for(void **state)
{
	struct http_headers	in, out;
	char			big[9000];

	memset(big, '1', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	http_headers_init(&in);
	add(&in, "X-Forwarded-For", big);
	forward(&in, &out, 1);
	assert_int_equal(strlen(get(&out, "x-forwarded-for")),
	    strlen(big) + strlen(", 192.0.2.7"));
	http_headers_clear(&in);
	http_headers_clear(&out);
}

static void
test_headers_list(void **state)
{
	struct http_headers	h;
	char			name[16];
	int			i;

	http_headers_init(&h);
	for (i = 0; i < 100; i++) {
		snprintf(name, sizeof name, "H%d", i);
		add(&h, name, "v");
	}
	assert_int_equal(h.n, 100);
	assert_string_equal(get(&h, "h99"), "v");
	assert_null(get(&h, "h100"));
	http_headers_clear(&h);
	assert_int_equal(h.n, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers_storage),
		cmocka_unit_test(test_hop_by_hop_dropped),
		cmocka_unit_test(test_connection_named_headers_dropped),
		cmocka_unit_test(test_host_and_forwarded),
		cmocka_unit_test(test_request_id_and_deadline),
		cmocka_unit_test(test_framing_headers_dropped),
		cmocka_unit_test(test_response_headers),
		cmocka_unit_test(test_client_deadline),
		cmocka_unit_test(test_host_valid),
		cmocka_unit_test(test_field_syntax),
		cmocka_unit_test(test_long_forwarded_for),
		cmocka_unit_test(test_headers_list),
		cmocka_unit_test(test_grpc_timeout),
		cmocka_unit_test(test_te_trailers),
		cmocka_unit_test(test_grpc_type),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
