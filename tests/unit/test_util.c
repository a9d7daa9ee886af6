/*
 * test_util.c: JSON escaping, request ids, integer parsing, zalloc, the
 * lazy timer.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "util.h"

static void
assert_json(const char *in, size_t len, const char *want)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 n;

	json_append_string(b, in, len);
	n = evbuffer_get_length(b);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(evbuffer_pullup(b, -1), want, n);
	evbuffer_free(b);
}

static void
test_json_string(void **state)
{
	assert_json("plain", 5, "\"plain\"");
	assert_json("", 0, "\"\"");
	assert_json("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
	assert_json("\n\r\t", 3, "\"\\n\\r\\t\"");
	assert_json("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"");
	assert_json("nul\0in", 6, "\"nul\\u0000in\"");
	/* UTF-8 passes through untouched. */
	assert_json("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");
}

static void
test_request_id(void **state)
{
	char	a[64], b[64];

	request_id_new(a, sizeof a);
	request_id_new(b, sizeof b);
	assert_int_equal(strlen(a), 24);
	assert_string_not_equal(a, b);
	assert_true(request_id_valid(a, strlen(a)));
}

static void
test_request_id_valid(void **state)
{
	char	long_id[200];

	assert_true(request_id_valid("abc-123_x.y", 11));
	assert_false(request_id_valid("", 0));
	assert_false(request_id_valid("has space", 9));
	assert_false(request_id_valid("quo\"te", 6));
	assert_false(request_id_valid("back\\slash", 10));
	assert_false(request_id_valid("ctl\x01", 4));
	memset(long_id, 'a', sizeof long_id);
	assert_true(request_id_valid(long_id, 128));
	assert_false(request_id_valid(long_id, 129));
}

static void
test_parse_u64(void **state)
{
	uint64_t	v = 7;

	assert_int_equal(parse_u64("0", 1, 100, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_u64("100", 3, 100, &v), 0);
	assert_int_equal(v, 100);
	assert_int_equal(parse_u64("101", 3, 100, &v), -1);
	assert_int_equal(parse_u64("", 0, 100, &v), -1);
	assert_int_equal(parse_u64("-1", 2, 100, &v), -1);
	assert_int_equal(parse_u64("1x", 2, 100, &v), -1);
	assert_int_equal(parse_u64(" 1", 2, 100, &v), -1);
	assert_int_equal(parse_u64("18446744073709551615", 20, UINT64_MAX,
	    &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_u64("18446744073709551616", 20, UINT64_MAX,
	    &v), -1);
}

static void
test_status_text(void **state)
{
	assert_string_equal(http_status_text(504), "Gateway Timeout");
	assert_string_equal(http_status_text(499), "Client Closed Request");
	assert_string_equal(http_status_text(299), "Unknown");
}

/*
 * zalloc zeroes what it returns, though malloc hands back the block just
 * freed (glibc's per-thread cache) with the bytes written into it.
 */
static void
test_zalloc(void **state)
{
	unsigned char	*p, *q;
	size_t		 i, n = 200;

	p = malloc(n);
	assert_non_null(p);
	memset(p, 0xa5, n);
	free(p);
	q = zalloc(4, n / 4);
	assert_non_null(q);
	for (i = 0; i < n; i++)
		assert_int_equal(q[i], 0);
	free(q);
	errno = 0;
	assert_null(zalloc(SIZE_MAX / 2, 4));
	assert_int_equal(errno, ENOMEM);
}

/*
 * The lazy timer, on a real event base. The waits are the timer's own
 * firings (EVLOOP_ONCE returns after them); what is checked is what a
 * firing finds, with due times far enough apart (10 s) that a slow machine
 * cannot make a "too early" firing come late.
 */
struct lt_test {
	struct lazy_timer	t;
	int			fired;
};

static void
lt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lt_test	*lt = arg;

	if (lazy_timer_fired(&lt->t))
		lt->fired++;
}

static void
test_lazy_timer(void **state)
{
	struct event_base	*base = event_base_new();
	struct lt_test		 lt = { { NULL, 0, 0 }, 0 };
	uint64_t		 now, far;

	assert_non_null(base);
	lt.t.ev = evtimer_new(base, lt_cb, &lt);
	assert_non_null(lt.t.ev);

	/* A later due time leaves the sooner firing armed ... */
	now = now_us();
	far = now + 10 * 1000000;
	assert_int_equal(lazy_timer_set(&lt.t, now + 10 * 1000, now), 0);
	assert_int_equal(lazy_timer_set(&lt.t, far, now), 0);
	assert_true(lt.t.armed == now + 10 * 1000);
	assert_true(lt.t.due == far);
	/* ... which fires early: nothing is owed yet, and it is armed again
	 * for the rest. */
	event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(lt.fired, 0);
	assert_true(lt.t.armed == far);
	assert_true(evtimer_pending(lt.t.ev, NULL));

	/* A sooner one arms it again: fired at once. */
	now = now_us();
	assert_int_equal(lazy_timer_set(&lt.t, now, now), 0);
	assert_true(lt.t.armed == now);
	event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(lt.fired, 1);
	assert_true(lt.t.due == 0);

	/* Cleared: the armed event fires, finds nothing, is not armed again. */
	now = now_us();
	assert_int_equal(lazy_timer_set(&lt.t, now, now), 0);
	lazy_timer_clear(&lt.t);
	event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(lt.fired, 1);
	assert_false(evtimer_pending(lt.t.ev, NULL));

	/* Soon: in this pass, though armed for later. */
	now = now_us();
	assert_int_equal(lazy_timer_set(&lt.t, now + 10 * 1000000, now), 0);
	lazy_timer_soon(&lt.t, now_us());
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(lt.fired, 2);
	assert_false(evtimer_pending(lt.t.ev, NULL));

	event_free(lt.t.ev);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_string),
		cmocka_unit_test(test_request_id),
		cmocka_unit_test(test_request_id_valid),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_status_text),
		cmocka_unit_test(test_zalloc),
		cmocka_unit_test(test_lazy_timer),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
