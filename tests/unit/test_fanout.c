/*
 * test_fanout.c: the modes, driven by hand. A route and its legs are set
 * up in memory; each step marks legs as request.c would (sent, ended with
 * an outcome) and checks what fanout_decide() says to do next. No loop, no
 * socket, no request.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "fanout.h"
#include "leg.h"

#define NUP	4

struct fx {
	struct upstream_conf	 up[NUP];
	struct upstream_conf	*ups[NUP];
	struct route_conf	 rt;
	struct leg		 legs[NUP];
	size_t			 n;
	struct fanout_action	 a;
	int			 once;		/* the events' once */
	int			 budget;	/* extra attempts left; -1: any */
	unsigned		 asked[2];	/* by enum fanout_extra */
};

static char	*names[NUP] = { "a", "b", "c", "d" };

/* A route of n upstreams "a", "b", ...; legs as request_dispatch() makes
 * them (leg i to upstream i, except in mode proxy). */
static struct fx *
fx_new(enum route_mode mode, size_t n)
{
	struct fx	*f;
	size_t		 i;

	assert_true(n <= NUP);
	assert_non_null(f = calloc(1, sizeof *f));
	for (i = 0; i < n; i++) {
		f->up[i].name = names[i];
		f->up[i].nservers = 1;
		f->ups[i] = &f->up[i];
		if (mode != MODE_PROXY)
			f->legs[i].up = f->ups[i];
	}
	f->rt.name = "r";
	f->rt.mode = mode;
	f->rt.upstreams = f->ups;
	f->rt.nupstreams = n;
	f->rt.hedge_delay_ms = 50;
	f->rt.quorum = (unsigned)(n / 2 + 1);
	f->rt.partial = PARTIAL_FAIL;
	f->n = n;
	f->budget = -1;
	return (f);
}

static void
fx_free(struct fx *f)
{
	fanout_action_clear(&f->a);
	free(f);
}

/* The budget as request.c asks it: f->budget more extra attempts. */
static int
extra_ok(void *arg, enum fanout_extra kind)
{
	struct fx	*f = arg;

	f->asked[kind]++;
	if (f->budget == 0)
		return (0);
	if (f->budget > 0)
		f->budget--;
	return (1);
}

static struct fanout_action *
decide(struct fx *f, enum fanout_what what, size_t leg,
    enum cancel_reason reason)
{
	struct fanout_event	ev;

	fanout_action_clear(&f->a);
	memset(&ev, 0, sizeof ev);
	ev.what = what;
	ev.leg = leg;
	ev.reason = reason;
	ev.once = f->once;
	ev.extra = extra_ok;
	ev.extra_arg = f;
	fanout_decide(&f->rt, f->legs, f->n, &ev, &f->a);
	return (&f->a);
}

/* Carry out an action's sending as request.c does. */
static void
send_action_legs(struct fx *f)
{
	size_t	i;

	for (i = f->a.start; i < f->a.start + f->a.nstart; i++) {
		assert_int_equal(f->legs[i].state, LEG_IDLE);
		if (f->a.up != NULL)
			f->legs[i].up = f->a.up;
		f->legs[i].state = LEG_RUNNING;
	}
}

static struct fanout_action *
start(struct fx *f)
{
	decide(f, FANOUT_START, 0, CANCEL_NONE);
	send_action_legs(f);
	return (&f->a);
}

/* legs[i] ends with outcome (and error, for LEG_FAILED); the mode is told. */
static struct fanout_action *
end(struct fx *f, size_t i, enum leg_outcome outcome, enum transfer_error err)
{
	struct leg	*l = &f->legs[i];

	assert_int_equal(l->state, LEG_RUNNING);
	l->state = LEG_DONE;
	l->outcome = outcome;
	l->error = err;
	l->status = outcome == LEG_OK ? 200 : outcome == LEG_STATUS ? 500 : 0;
	return (decide(f, FANOUT_LEG_ENDED, i, CANCEL_NONE));
}

#define ok(f, i)	end(f, i, LEG_OK, XFER_OK)
#define status(f, i)	end(f, i, LEG_STATUS, XFER_OK)
#define failed(f, i, e)	end(f, i, LEG_FAILED, e)

/* Nothing to do: no leg, no timer, no cut, no answer. */
static void
assert_wait(const struct fanout_action *a)
{
	assert_int_equal(a->answer, FANOUT_WAIT);
	assert_int_equal(a->nstart, 0);
	assert_int_equal(a->timer, FANOUT_TIMER_KEEP);
	assert_false(a->supersede);
	assert_int_equal(a->hedges_sent, 0);
	assert_int_equal(a->hedges_won, 0);
	assert_null(a->partial);
}

static void
assert_sends(const struct fanout_action *a, size_t first, size_t n,
    const struct upstream_conf *up)
{
	assert_int_equal(a->nstart, n);
	assert_int_equal(a->start, first);
	assert_ptr_equal(a->up, up);
	assert_int_equal(a->answer, FANOUT_WAIT);
	assert_false(a->supersede);
}

static void
assert_error(const struct fanout_action *a, int status, const char *error)
{
	assert_int_equal(a->answer, FANOUT_ERROR);
	assert_int_equal(a->status, status);
	assert_string_equal(a->error, error);
	assert_int_equal(a->nstart, 0);
}

static void
assert_envelope(const struct fanout_action *a, int status, const char *partial)
{
	assert_int_equal(a->answer, FANOUT_ENVELOPE);
	assert_int_equal(a->status, status);
	if (partial == NULL)
		assert_null(a->partial);
	else {
		assert_non_null(a->partial);
		assert_string_equal(a->partial, partial);
	}
	assert_int_equal(a->nstart, 0);
}

/* legs[i] answers, with Fanout-Upstream: its name when named. */
static void
assert_answers_leg(const struct fx *f, size_t i, int named)
{
	assert_int_equal(f->a.answer, FANOUT_LEG);
	assert_int_equal(f->a.leg, i);
	if (named) {
		assert_string_equal(f->a.header_name, "Fanout-Upstream");
		assert_string_equal(f->a.header_value, f->legs[i].up->name);
	} else
		assert_null(f->a.header_name);
	assert_int_equal(f->a.nstart, 0);
}

/* ---- proxy ---------------------------------------------------------------- */

static void
test_proxy_round_robin(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 3);

	f->rt.rr_next = 2;
	assert_sends(start(f), 0, 1, f->ups[2]);
	assert_int_equal(f->a.timer, FANOUT_TIMER_KEEP);
	assert_int_equal(f->rt.rr_next, 3);
	/* The next request takes the next turn, wrapping around. */
	memset(f->legs, 0, sizeof f->legs);
	assert_sends(start(f), 0, 1, f->ups[0]);
	memset(f->legs, 0, sizeof f->legs);
	assert_sends(start(f), 0, 1, f->ups[1]);
	fx_free(f);
}

static void
test_proxy_answers_the_leg(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 2);

	start(f);
	ok(f, 0);
	assert_answers_leg(f, 0, 0);
	assert_false(f->a.supersede);
	fx_free(f);

	/* Any whole response is the answer, 5xx too: no retry. */
	f = fx_new(MODE_PROXY, 2);
	start(f);
	status(f, 0);
	assert_answers_leg(f, 0, 0);
	fx_free(f);
}

static void
test_proxy_connect_failure_tries_the_ring(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 3);

	f->rt.rr_next = 1;
	assert_sends(start(f), 0, 1, f->ups[1]);
	/* Each connect failure: the next upstream in the ring, next leg. */
	assert_sends(failed(f, 0, XFER_CONNECT), 1, 1, f->ups[2]);
	send_action_legs(f);
	assert_sends(failed(f, 1, XFER_CONNECT), 2, 1, f->ups[0]);
	send_action_legs(f);
	/* Every upstream tried once: no more. */
	assert_error(failed(f, 2, XFER_CONNECT), 502, "upstream_failed");
	fx_free(f);

	/* A retry that answers answers with its own leg. */
	f = fx_new(MODE_PROXY, 2);
	start(f);
	failed(f, 0, XFER_CONNECT);
	send_action_legs(f);
	ok(f, 1);
	assert_answers_leg(f, 1, 0);
	fx_free(f);
}

static void
test_proxy_other_failures_do_not_retry(void **state)
{
	static const enum transfer_error bad[] = {
		XFER_RESET, XFER_PROTOCOL, XFER_TOO_LARGE,
	};
	struct fx	*f;
	size_t		 i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		f = fx_new(MODE_PROXY, 3);
		start(f);
		assert_error(failed(f, 0, bad[i]), 502, "upstream_failed");
		fx_free(f);
	}
	f = fx_new(MODE_PROXY, 3);
	start(f);
	assert_error(failed(f, 0, XFER_TIMEOUT), 504, "upstream_timeout");
	fx_free(f);

	/* Out of descriptors is ours: the next upstream would fail the same. */
	f = fx_new(MODE_PROXY, 3);
	start(f);
	assert_error(failed(f, 0, XFER_NO_SOCKET), 503, "over_capacity");
	fx_free(f);

	/* After a retry too. */
	f = fx_new(MODE_PROXY, 3);
	start(f);
	failed(f, 0, XFER_CONNECT);
	send_action_legs(f);
	assert_error(failed(f, 1, XFER_TIMEOUT), 504, "upstream_timeout");
	fx_free(f);
}

static void
test_proxy_servers_then_the_ring(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 2);

	/* a has two servers, b one: legs for three attempts. */
	f->up[0].nservers = 2;
	f->n = 3;
	assert_sends(start(f), 0, 1, f->ups[0]);
	/* A connect failure: a's other server first, then b. */
	assert_sends(failed(f, 0, XFER_CONNECT), 1, 1, f->ups[0]);
	send_action_legs(f);
	assert_sends(failed(f, 1, XFER_CONNECT), 2, 1, f->ups[1]);
	send_action_legs(f);
	assert_error(failed(f, 2, XFER_CONNECT), 502, "upstream_failed");
	assert_int_equal(f->asked[FANOUT_EXTRA_RETRY], 2);
	fx_free(f);
}

static void
test_proxy_unavailable(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 2);

	/* No server of a: on to b, which is no extra attempt. */
	assert_sends(start(f), 0, 1, f->ups[0]);
	assert_sends(failed(f, 0, XFER_UNAVAILABLE), 1, 1, f->ups[1]);
	send_action_legs(f);
	assert_int_equal(f->asked[FANOUT_EXTRA_RETRY], 0);
	/* None of b either. */
	assert_error(failed(f, 1, XFER_UNAVAILABLE), 503,
	    "no_healthy_upstream");
	fx_free(f);

	/* One upstream with no server. */
	f = fx_new(MODE_PROXY, 1);
	start(f);
	assert_error(failed(f, 0, XFER_UNAVAILABLE), 503,
	    "no_healthy_upstream");
	fx_free(f);
}

static void
test_proxy_retry_over_budget(void **state)
{
	struct fx	*f = fx_new(MODE_PROXY, 2);

	f->budget = 0;
	start(f);
	assert_error(failed(f, 0, XFER_CONNECT), 502, "upstream_failed");
	assert_int_equal(f->asked[FANOUT_EXTRA_RETRY], 1);
	fx_free(f);

	/* A retry that answers is counted as won. */
	f = fx_new(MODE_PROXY, 2);
	f->budget = 1;
	start(f);
	failed(f, 0, XFER_CONNECT);
	send_action_legs(f);
	ok(f, 1);
	assert_answers_leg(f, 1, 0);
	assert_int_equal(f->a.retries_won, 1);
	fx_free(f);
}

/* ---- once: not safe to repeat ---------------------------------------------- */

static void
test_once_sends_one_leg(void **state)
{
	static const enum route_mode modes[] = {
		MODE_FIRST, MODE_HEDGE, MODE_QUORUM
	};
	struct fx	*f;
	size_t		 i;

	for (i = 0; i < sizeof modes / sizeof modes[0]; i++) {
		f = fx_new(modes[i], 3);
		f->once = 1;
		assert_sends(start(f), 0, 1, NULL);
		assert_int_equal(f->a.unsafe_skipped, 2);
		assert_int_equal(f->a.timer, FANOUT_TIMER_KEEP);
		/* No hedge comes of a timer. */
		assert_wait(decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE));
		/* Its answer, whatever its status, as proxy gives it. */
		status(f, 0);
		assert_answers_leg(f, 0, 1);
		fx_free(f);

		f = fx_new(modes[i], 3);
		f->once = 1;
		start(f);
		assert_error(failed(f, 0, XFER_CONNECT), 502,
		    "upstream_failed");
		assert_int_equal(f->asked[FANOUT_EXTRA_HEDGE] +
		    f->asked[FANOUT_EXTRA_RETRY], 0);
		fx_free(f);
	}
	/* Mode all asks different services: not affected. */
	f = fx_new(MODE_ALL, 3);
	f->once = 1;
	assert_sends(start(f), 0, 3, NULL);
	assert_int_equal(f->a.unsafe_skipped, 0);
	fx_free(f);
}

/* ---- all ------------------------------------------------------------------- */

static void
test_all_sends_every_leg_and_waits_for_all(void **state)
{
	struct fx	*f = fx_new(MODE_ALL, 3);

	assert_sends(start(f), 0, 3, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_KEEP);
	assert_wait(ok(f, 2));
	assert_wait(ok(f, 0));
	assert_envelope(ok(f, 1), 200, NULL);
	assert_false(f->a.supersede);
	fx_free(f);
}

static void
test_all_failure(void **state)
{
	struct fx	*f = fx_new(MODE_ALL, 3);

	start(f);
	assert_wait(ok(f, 0));
	assert_wait(failed(f, 1, XFER_TIMEOUT));
	/* A non-2xx response is not a success either. */
	assert_envelope(status(f, 2), 502, NULL);
	fx_free(f);
}

static void
test_all_partial_allow(void **state)
{
	struct fx	*f = fx_new(MODE_ALL, 3);

	f->rt.partial = PARTIAL_ALLOW;
	start(f);
	assert_wait(status(f, 2));
	assert_wait(ok(f, 0));
	/* 200, and the failed ones named in route order. */
	assert_envelope(failed(f, 1, XFER_RESET), 200, "b,c");
	fx_free(f);

	/* Nothing to show for it: 502 all the same. */
	f = fx_new(MODE_ALL, 2);
	f->rt.partial = PARTIAL_ALLOW;
	start(f);
	failed(f, 0, XFER_CONNECT);
	assert_envelope(status(f, 1), 502, NULL);
	fx_free(f);

	/* All succeeded: no Fanout-Partial. */
	f = fx_new(MODE_ALL, 2);
	f->rt.partial = PARTIAL_ALLOW;
	start(f);
	ok(f, 0);
	assert_envelope(ok(f, 1), 200, NULL);
	fx_free(f);
}

/* The deadline flipped the request: legs still running were cancelled. */
static void
cut_running(struct fx *f)
{
	size_t	i;

	for (i = 0; i < f->n; i++) {
		if (f->legs[i].state != LEG_RUNNING)
			continue;
		f->legs[i].state = LEG_DONE;
		f->legs[i].outcome = LEG_CANCELLED;
	}
}

static void
test_all_partial_allow_at_the_deadline(void **state)
{
	struct fx	*f = fx_new(MODE_ALL, 3);

	f->rt.partial = PARTIAL_ALLOW;
	start(f);
	assert_wait(ok(f, 1));
	cut_running(f);
	assert_envelope(decide(f, FANOUT_CANCELLED, 0, CANCEL_DEADLINE), 200,
	    "a,c");
	fx_free(f);

	/* Nothing arrived in time: the request's own 504. */
	f = fx_new(MODE_ALL, 3);
	f->rt.partial = PARTIAL_ALLOW;
	start(f);
	assert_wait(failed(f, 1, XFER_RESET));
	cut_running(f);
	assert_wait(decide(f, FANOUT_CANCELLED, 0, CANCEL_DEADLINE));
	fx_free(f);

	/* partial = fail: the request's own 504. */
	f = fx_new(MODE_ALL, 3);
	start(f);
	ok(f, 1);
	cut_running(f);
	assert_wait(decide(f, FANOUT_CANCELLED, 0, CANCEL_DEADLINE));
	fx_free(f);
}

/* Only mode all with partial = allow, at the deadline, with a success,
 * answers a cancel itself; every other case is the request's. */
static void
test_cancel_reasons(void **state)
{
	static const enum route_mode modes[] = {
		MODE_PROXY, MODE_ALL, MODE_FIRST, MODE_HEDGE, MODE_QUORUM,
	};
	static const enum cancel_reason reasons[] = {
		CANCEL_CLIENT_CLOSED, CANCEL_DEADLINE, CANCEL_SHUTDOWN,
		CANCEL_SUPERSEDED,
	};
	struct fanout_event	 ev;
	struct fanout_action	 a;
	struct fx		*f;
	size_t			 m, r;
	int			 p;

	for (m = 0; m < sizeof modes / sizeof modes[0]; m++)
	for (p = 0; p < 2; p++)
	for (r = 0; r < sizeof reasons / sizeof reasons[0]; r++) {
		f = fx_new(modes[m], 3);
		f->rt.partial = p ? PARTIAL_ALLOW : PARTIAL_FAIL;
		f->rt.quorum = 3;
		start(f);
		/* One success in hand (leg 0 in every mode), the rest cut. */
		f->legs[0].state = LEG_DONE;
		f->legs[0].outcome = LEG_OK;
		if (modes[m] == MODE_PROXY)
			f->legs[0].up = f->ups[0];
		cut_running(f);
		decide(f, FANOUT_CANCELLED, 0, reasons[r]);
		if (modes[m] == MODE_ALL && p && reasons[r] == CANCEL_DEADLINE)
			assert_envelope(&f->a, 200, "b,c");
		else
			assert_wait(&f->a);
		fx_free(f);
	}

	/* Not routed (a request flipped before its head was done). */
	memset(&ev, 0, sizeof ev);
	ev.what = FANOUT_CANCELLED;
	ev.reason = CANCEL_DEADLINE;
	fanout_decide(NULL, NULL, 0, &ev, &a);
	assert_wait(&a);
	/* Routed, no legs yet (the deadline had passed at dispatch). */
	f = fx_new(MODE_ALL, 2);
	f->rt.partial = PARTIAL_ALLOW;
	fanout_decide(&f->rt, NULL, 0, &ev, &a);
	assert_wait(&a);
	fx_free(f);
}

/* ---- first ----------------------------------------------------------------- */

static void
test_first_winner_supersedes_the_rest(void **state)
{
	struct fx	*f = fx_new(MODE_FIRST, 3);

	assert_sends(start(f), 0, 3, NULL);
	assert_wait(failed(f, 0, XFER_CONNECT));
	assert_wait(status(f, 1));	/* a non-2xx does not win */
	ok(f, 2);
	assert_true(f->a.supersede);
	assert_answers_leg(f, 2, 1);
	assert_string_equal(f->a.header_value, "c");
	fx_free(f);

	/* The first success wins even with others still running. */
	f = fx_new(MODE_FIRST, 3);
	start(f);
	ok(f, 1);
	assert_true(f->a.supersede);
	assert_answers_leg(f, 1, 1);
	fx_free(f);
}

static void
test_first_all_fail(void **state)
{
	struct fx	*f = fx_new(MODE_FIRST, 3);

	start(f);
	assert_wait(failed(f, 2, XFER_TIMEOUT));
	assert_wait(status(f, 0));
	assert_envelope(failed(f, 1, XFER_RESET), 502, NULL);
	assert_false(f->a.supersede);
	fx_free(f);
}

/* ---- hedge ----------------------------------------------------------------- */

static void
test_hedge_timer_sends_the_next(void **state)
{
	struct fx	*f = fx_new(MODE_HEDGE, 3);

	f->rt.hedge_delay_ms = 75;
	/* One leg, and the timer armed first (a leg may fail at once). */
	assert_sends(start(f), 0, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_ARM);
	assert_int_equal(f->a.timer_ms, 75);
	assert_int_equal(f->a.hedges_sent, 0);
	assert_int_equal(f->legs[1].state, LEG_IDLE);

	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	assert_sends(&f->a, 1, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_ARM);
	assert_int_equal(f->a.timer_ms, 75);
	assert_int_equal(f->a.hedges_sent, 1);
	send_action_legs(f);

	/* The last leg: nothing left to arm the timer for. */
	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	assert_sends(&f->a, 2, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_int_equal(f->a.hedges_sent, 1);
	send_action_legs(f);

	assert_wait(decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE));
	fx_free(f);
}

static void
test_hedge_failure_hedges_at_once(void **state)
{
	struct fx	*f = fx_new(MODE_HEDGE, 3);

	start(f);
	failed(f, 0, XFER_CONNECT);
	assert_sends(&f->a, 1, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_ARM);
	assert_int_equal(f->a.hedges_sent, 1);
	send_action_legs(f);
	status(f, 1);
	assert_sends(&f->a, 2, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_int_equal(f->a.hedges_sent, 1);
	send_action_legs(f);
	/* Every leg failed. */
	assert_envelope(failed(f, 2, XFER_TIMEOUT), 502, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_KEEP);
	assert_int_equal(f->a.hedges_sent, 0);
	fx_free(f);

	/* A failure with none left to send waits for those running. */
	f = fx_new(MODE_HEDGE, 2);
	start(f);
	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	send_action_legs(f);
	assert_wait(failed(f, 1, XFER_RESET));
	assert_envelope(failed(f, 0, XFER_RESET), 502, NULL);
	fx_free(f);
}

static void
test_hedge_winner(void **state)
{
	struct fx	*f = fx_new(MODE_HEDGE, 3);

	start(f);
	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	send_action_legs(f);
	/* The hedge wins: the timer is stopped, the first leg cut. */
	ok(f, 1);
	assert_answers_leg(f, 1, 1);
	assert_string_equal(f->a.header_value, "b");
	assert_true(f->a.supersede);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_int_equal(f->a.hedges_won, 1);
	assert_int_equal(f->a.hedges_sent, 0);
	fx_free(f);

	/* The first leg wins: not a hedge won. */
	f = fx_new(MODE_HEDGE, 3);
	start(f);
	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	send_action_legs(f);
	ok(f, 0);
	assert_answers_leg(f, 0, 1);
	assert_true(f->a.supersede);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_int_equal(f->a.hedges_won, 0);
	fx_free(f);
}

static void
test_hedge_one_upstream(void **state)
{
	struct fx	*f = fx_new(MODE_HEDGE, 1);

	assert_sends(start(f), 0, 1, NULL);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_envelope(failed(f, 0, XFER_CONNECT), 502, NULL);
	fx_free(f);
}

/* The hedge timer means nothing to the other modes. */
static void
test_timer_only_for_hedge(void **state)
{
	static const enum route_mode modes[] = {
		MODE_PROXY, MODE_ALL, MODE_FIRST, MODE_QUORUM,
	};
	struct fx	*f;
	size_t		 m;

	for (m = 0; m < sizeof modes / sizeof modes[0]; m++) {
		f = fx_new(modes[m], 3);
		start(f);
		assert_wait(decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE));
		fx_free(f);
	}
}

static void
test_hedge_over_budget(void **state)
{
	struct fx	*f = fx_new(MODE_HEDGE, 3);

	f->budget = 0;
	start(f);
	/* The timer's hedge is refused: no leg, and no more timers. */
	decide(f, FANOUT_HEDGE_TIMER, 0, CANCEL_NONE);
	assert_int_equal(f->a.nstart, 0);
	assert_int_equal(f->a.timer, FANOUT_TIMER_DISARM);
	assert_int_equal(f->a.hedges_sent, 0);
	assert_int_equal(f->asked[FANOUT_EXTRA_HEDGE], 1);
	/* The first leg fails, the hedge after it is refused too: with
	 * nothing left running, the answer is the 502 envelope. */
	assert_envelope(failed(f, 0, XFER_RESET), 502, NULL);
	assert_int_equal(f->asked[FANOUT_EXTRA_HEDGE], 2);
	fx_free(f);
}

/* ---- quorum ---------------------------------------------------------------- */

static void
test_quorum_kth_success(void **state)
{
	struct fx	*f = fx_new(MODE_QUORUM, 3);

	f->rt.quorum = 2;
	assert_sends(start(f), 0, 3, NULL);
	assert_wait(ok(f, 0));
	assert_wait(failed(f, 1, XFER_RESET));
	ok(f, 2);
	assert_envelope(&f->a, 200, NULL);
	assert_true(f->a.supersede);
	fx_free(f);

	/* K reached with a leg still running: it is cut. */
	f = fx_new(MODE_QUORUM, 4);
	f->rt.quorum = 2;
	start(f);
	assert_wait(ok(f, 3));
	ok(f, 1);
	assert_envelope(&f->a, 200, NULL);
	assert_true(f->a.supersede);
	fx_free(f);
}

static void
test_quorum_fails_early(void **state)
{
	struct fx	*f = fx_new(MODE_QUORUM, 4);

	/* 3 of 4: two failures and it can no longer be reached. */
	f->rt.quorum = 3;
	start(f);
	assert_wait(failed(f, 0, XFER_CONNECT));
	status(f, 2);
	assert_envelope(&f->a, 502, NULL);
	assert_true(f->a.supersede);
	fx_free(f);

	/* All of 3: the first failure decides. */
	f = fx_new(MODE_QUORUM, 3);
	f->rt.quorum = 3;
	start(f);
	assert_wait(ok(f, 0));
	failed(f, 1, XFER_TIMEOUT);
	assert_envelope(&f->a, 502, NULL);
	assert_true(f->a.supersede);
	fx_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proxy_round_robin),
		cmocka_unit_test(test_proxy_answers_the_leg),
		cmocka_unit_test(test_proxy_connect_failure_tries_the_ring),
		cmocka_unit_test(test_proxy_other_failures_do_not_retry),
		cmocka_unit_test(test_proxy_servers_then_the_ring),
		cmocka_unit_test(test_proxy_unavailable),
		cmocka_unit_test(test_proxy_retry_over_budget),
		cmocka_unit_test(test_once_sends_one_leg),
		cmocka_unit_test(test_hedge_over_budget),
		cmocka_unit_test(test_all_sends_every_leg_and_waits_for_all),
		cmocka_unit_test(test_all_failure),
		cmocka_unit_test(test_all_partial_allow),
		cmocka_unit_test(test_all_partial_allow_at_the_deadline),
		cmocka_unit_test(test_cancel_reasons),
		cmocka_unit_test(test_first_winner_supersedes_the_rest),
		cmocka_unit_test(test_first_all_fail),
		cmocka_unit_test(test_hedge_timer_sends_the_next),
		cmocka_unit_test(test_hedge_failure_hedges_at_once),
		cmocka_unit_test(test_hedge_winner),
		cmocka_unit_test(test_hedge_one_upstream),
		cmocka_unit_test(test_timer_only_for_hedge),
		cmocka_unit_test(test_quorum_kth_success),
		cmocka_unit_test(test_quorum_fails_early),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
