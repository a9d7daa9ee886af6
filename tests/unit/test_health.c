/*
 * test_health.c: which server a leg goes to, and what the end of a leg says
 * of its server, driven by hand: configurations from text, legs picked
 * and ended with a verdict, the server states read back. No loop, no
 * socket. An ejection's end is made by setting its time into the past, so
 * that nothing here waits for the clock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "budget.h"
#include "config.h"
#include "health.h"
#include "util.h"

static struct config *
load(const char *text)
{
	struct config	*cfg;
	char		*errors = NULL;

	cfg = config_load_string("t.ini", text, &errors);
	if (cfg == NULL) {
		print_error("unexpected errors:\n%s", errors);
		free(errors);
		fail();
	}
	return (cfg);
}

/* Pick a server for a leg and end the leg at once with verdict. */
static struct server_conf *
leg(struct upstream_conf *u, enum health_verdict v)
{
	struct server_conf	*sv;

	sv = health_pick(u, NULL, 0);
	if (sv != NULL) {
		assert_int_equal(sv->st->inflight, 1);
		health_leg_end(u, sv, v);
		assert_int_equal(sv->st->inflight, 0);
	}
	return (sv);
}

static void
test_weighted_round_robin(void **state)
{
	struct config		*cfg;
	struct upstream_conf	*u;
	unsigned		 n[3] = { 0, 0, 0 }, run = 0, longest = 0;
	size_t			 i, k, prev = 3;

	cfg = load("[upstream \"u\"]\nservers = http://a:1 weight=3, "
	    "http://b:1, http://c:1 weight=2\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	/* 10 rounds of the 6 turns: each server its weight's share,
	 * exactly, and never the heavy one 3 times in a row. */
	for (i = 0; i < 60; i++) {
		k = (size_t)(leg(u, HEALTH_PASS) - u->servers);
		n[k]++;
		run = (k == prev) ? run + 1 : 1;
		if (run > longest)
			longest = run;
		prev = k;
	}
	assert_int_equal(n[0], 30);
	assert_int_equal(n[1], 10);
	assert_int_equal(n[2], 20);
	assert_true(longest < 3);
	config_unref(cfg);
}

static void
test_least_request(void **state)
{
	struct config		*cfg;
	struct upstream_conf	*u;
	struct server_conf	*held[5], *sv;
	size_t			 i;

	cfg = load("[upstream \"u\"]\nservers = http://a:2, http://b:2\n"
	    "balance = least_request\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	/* Five legs held on a (its count raised by hand): with two servers
	 * the two choices are both, and b, with none, wins every time. */
	for (i = 0; i < 5; i++) {
		held[i] = &u->servers[0];
		__atomic_add_fetch(&held[i]->st->inflight, 1, __ATOMIC_RELAXED);
	}
	for (i = 0; i < 20; i++) {
		sv = health_pick(u, NULL, 0);
		assert_ptr_equal(sv, &u->servers[1]);
		health_leg_end(u, sv, HEALTH_PASS);
	}
	for (i = 0; i < 5; i++)
		health_leg_end(u, held[i], HEALTH_NONE);
	assert_int_equal(u->servers[0].st->inflight, 0);
	config_unref(cfg);
}

static void
test_ejection_doubles(void **state)
{
	struct config		*cfg;
	struct upstream_conf	*u;
	struct server_state	*st;
	uint64_t		 t0, t1;
	int			 i;

	cfg = load("[upstream \"u\"]\nurl = http://eject:1\neject_after = 3\n"
	    "eject_time = 10s\neject_time_max = 35s\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	st = u->servers[0].st;

	/* A success breaks a run of failures. */
	leg(u, HEALTH_FAIL);
	leg(u, HEALTH_FAIL);
	leg(u, HEALTH_PASS);
	leg(u, HEALTH_FAIL);
	leg(u, HEALTH_FAIL);
	assert_int_equal(st->ejections, 0);
	/* Cancelled legs say nothing, for or against. */
	for (i = 0; i < 10; i++)
		leg(u, HEALTH_NONE);
	assert_int_equal(st->fails, 2);

	t0 = now_ms();
	leg(u, HEALTH_FAIL);
	t1 = now_ms();
	assert_int_equal(st->ejections, 1);
	assert_in_range(st->ejected_until, t0 + 10000, t1 + 10000);
	/* One server, ejected: the circuit is open, no leg goes. */
	assert_null(health_pick(u, NULL, 0));
	assert_int_equal(st->inflight, 0);

	/* Its time is over: back, and the next ejection lasts twice as
	 * long, the one after is capped at eject_time_max. */
	st->ejected_until = 1;
	st->back_at = now_ms();
	assert_non_null(leg(u, HEALTH_FAIL));
	leg(u, HEALTH_FAIL);
	t0 = now_ms();
	leg(u, HEALTH_FAIL);
	t1 = now_ms();
	assert_int_equal(st->ejections, 2);
	assert_in_range(st->ejected_until, t0 + 20000, t1 + 20000);

	st->ejected_until = 1;
	st->back_at = now_ms();
	for (i = 0; i < 3; i++)
		leg(u, HEALTH_FAIL);
	assert_int_equal(st->ejections, 3);
	assert_in_range(st->ejected_until, t0 + 35000, now_ms() + 35000);

	/* Back for eject_time_max without a relapse: forgiven, the next
	 * ejection is a first one again. */
	st->ejected_until = 1;
	st->back_at = now_ms() - 35000;
	t0 = now_ms();
	for (i = 0; i < 3; i++)
		leg(u, HEALTH_FAIL);
	t1 = now_ms();
	assert_int_equal(st->ejections, 4);
	assert_in_range(st->ejected_until, t0 + 10000, t1 + 10000);
	config_unref(cfg);
}

static void
test_max_ejected(void **state)
{
	struct config		*cfg;
	struct upstream_conf	*u;
	int			 i;

	/* 50% of 3 servers: 1. */
	cfg = load("[upstream \"u\"]\nservers = http://m:1, http://m:2, "
	    "http://m:3\neject_after = 1\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	assert_int_equal(u->max_ejected, 1);
	/* Every leg fails: the first server is ejected, the others are not,
	 * and keep taking legs. */
	for (i = 0; i < 12; i++)
		assert_non_null(leg(u, HEALTH_FAIL));
	assert_int_equal(u->servers[0].st->ejections +
	    u->servers[1].st->ejections + u->servers[2].st->ejections, 1);
	assert_int_equal(u->servers[0].st->ejections, 1);
	assert_false(health_available(&u->servers[0]));
	assert_true(health_available(&u->servers[1]));
	config_unref(cfg);

	/* eject_after = 0: never. */
	cfg = load("[upstream \"u\"]\nurl = http://never:1\neject_after = 0\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	for (i = 0; i < 20; i++)
		assert_non_null(leg(u, HEALTH_FAIL));
	assert_int_equal(u->servers[0].st->ejections, 0);
	config_unref(cfg);
}

static void
test_skip_tried(void **state)
{
	struct config		*cfg;
	struct upstream_conf	*u;
	struct server_conf	*tried[2], *sv;

	cfg = load("[upstream \"u\"]\nservers = http://s:1, http://s:2, "
	    "http://s:3\n[route \"r\"]\nmatch = /\nupstreams = u\n");
	u = cfg->upstreams[0];
	/* Whatever the turn, a request's retries go to servers it has not
	 * tried, until there is none. */
	tried[0] = health_pick(u, NULL, 0);
	tried[1] = health_pick(u, tried, 1);
	assert_ptr_not_equal(tried[0], tried[1]);
	sv = health_pick(u, tried, 2);
	assert_non_null(sv);
	assert_ptr_not_equal(sv, tried[0]);
	assert_ptr_not_equal(sv, tried[1]);
	health_leg_end(u, sv, HEALTH_NONE);
	health_leg_end(u, tried[0], HEALTH_NONE);
	health_leg_end(u, tried[1], HEALTH_NONE);
	tried[0] = &u->servers[0];
	tried[1] = &u->servers[1];
	u->servers[2].st->checked_down = 1;	/* active checks took it out */
	assert_null(health_pick(u, tried, 2));
	config_unref(cfg);
}

static void
test_reload_keeps_state(void **state)
{
	struct config	*a, *b, *c;

	a = load("[upstream \"u\"]\nurl = http://keep:1\neject_after = 1\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	leg(a->upstreams[0], HEALTH_FAIL);
	assert_int_equal(a->upstreams[0]->servers[0].st->ejections, 1);
	/* A new configuration that keeps the server keeps its ejection. */
	b = load("[upstream \"u\"]\nservers = http://keep:1 weight=4\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	assert_ptr_equal(b->upstreams[0]->servers[0].st,
	    a->upstreams[0]->servers[0].st);
	assert_false(health_available(&b->upstreams[0]->servers[0]));
	config_unref(a);
	config_unref(b);
	/* Once no configuration names it, its state is gone. */
	c = load("[upstream \"u\"]\nurl = http://keep:1\n"
	    "[route \"r\"]\nmatch = /\nupstreams = u\n");
	assert_int_equal(c->upstreams[0]->servers[0].st->ejections, 0);
	assert_true(health_available(&c->upstreams[0]->servers[0]));
	config_unref(c);
}

static void
test_budget(void **state)
{
	struct config		*cfg;
	struct route_conf	*rt;
	int			 i, sent = 0;

	cfg = load("[upstream \"u\"]\nurl = http://b:1\n[upstream \"v\"]\n"
	    "url = http://b:2\n[route \"r\"]\nmatch = /\nmode = hedge\n"
	    "upstreams = u, v\nbudget = 25%\nbudget_min = 0\n");
	rt = cfg->routes[0];
	assert_true(budget_applies(rt));
	/* The window holds 10 s: the 20 requests are all in it. */
	for (i = 1; i <= 20; i++) {
		budget_request(rt);
		/* A hedge for every request: one in four goes. */
		if (budget_take(rt, BUDGET_HEDGE)) {
			sent++;
			assert_true(i % 4 == 0);
		}
	}
	assert_int_equal(sent, 5);
	config_unref(cfg);

	cfg = load("[upstream \"u\"]\nurl = http://b:1\n[route \"r\"]\n"
	    "match = /\nupstreams = u\n");
	assert_false(budget_applies(cfg->routes[0]));	/* one server */
	config_unref(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_weighted_round_robin),
		cmocka_unit_test(test_least_request),
		cmocka_unit_test(test_ejection_doubles),
		cmocka_unit_test(test_max_ejected),
		cmocka_unit_test(test_skip_tried),
		cmocka_unit_test(test_reload_keeps_state),
		cmocka_unit_test(test_budget),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
