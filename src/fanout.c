/*
 * fanout.c: the modes (see fanout.h).
 *
 *	proxy	one leg; on a connect failure another server of the same
 *		upstream, then the next upstream in the ring (retries, within
 *		the route's budget)
 *	all	every leg; answer when all have ended
 *	first	every leg; the first success wins, the rest are superseded
 *	hedge	one leg now, one more each hedge_delay or at once after a
 *		failure; the first success wins (Dean and Barroso, "The Tail
 *		at Scale", 2013)
 *	quorum	every leg; answer once K succeeded, or fail as soon as K can
 *		no longer be reached
 *
 * A request that is not safe to repeat (ev->once) goes once, to the first
 * upstream, in first, hedge and quorum alike, and is answered as proxy
 * answers. Hedges after the first leg and proxy's retries are extra
 * attempts: each is asked of ev->extra (the route's budget) before it goes.
 *
 * Every function here reads the route and the legs and fills in an action;
 * none sends, arms, cuts or answers anything itself: request.c carries the
 * action out. How many legs are running or were sent is read from the legs'
 * states, which the request keeps up to date before it asks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fanout.h"
#include "leg.h"

static int
leg_succeeded(const struct leg *l)
{
	return (l->state == LEG_DONE && l->outcome == LEG_OK);
}

static size_t
legs_in(const struct leg *legs, size_t nlegs, enum leg_state state)
{
	size_t	i, n = 0;

	for (i = 0; i < nlegs; i++)
		if (legs[i].state == state)
			n++;
	return (n);
}

static int
any_succeeded(const struct leg *legs, size_t nlegs)
{
	size_t	i;

	for (i = 0; i < nlegs; i++)
		if (leg_succeeded(&legs[i]))
			return (1);
	return (0);
}

/* "a,b": the legs that did not succeed, or NULL when all did. */
static char *
failed_names(const struct leg *legs, size_t nlegs)
{
	char	*s = NULL, *n;
	size_t	 i;

	for (i = 0; i < nlegs; i++) {
		if (leg_succeeded(&legs[i]))
			continue;
		if (asprintf(&n, "%s%s%s", s ? s : "", s ? "," : "",
		    legs[i].up->name) == -1) {
			free(s);
			return (NULL);
		}
		free(s);
		s = n;
	}
	return (s);
}

/* ---- what an action can say ------------------------------------------------ */

static void
send_legs(struct fanout_action *a, size_t first, size_t n,
    const struct upstream_conf *up)
{
	a->start = first;
	a->nstart = n;
	a->up = up;
}

/* legs[i]'s response, with a Fanout-Upstream header when named. */
static void
answer_leg(struct fanout_action *a, const struct leg *legs, size_t i,
    int named)
{
	a->answer = FANOUT_LEG;
	a->leg = i;
	if (named) {
		a->header_name = "Fanout-Upstream";
		a->header_value = legs[i].up->name;
	}
}

/* partial: taken by the action. */
static void
answer_envelope(struct fanout_action *a, int status, char *partial)
{
	a->answer = FANOUT_ENVELOPE;
	a->status = status;
	a->partial = partial;
}

static void
answer_error(struct fanout_action *a, int status, const char *error)
{
	a->answer = FANOUT_ERROR;
	a->status = status;
	a->error = error;
}

/* ---- proxy ---------------------------------------------------------------- */

static void
proxy_start(const struct route_conf *rt, struct fanout_action *a)
{
	unsigned	first;

	/* The one mutable field of a configuration (see config.h). */
	first = __atomic_fetch_add(&((struct route_conf *)rt)->rr_next, 1,
	    __ATOMIC_RELAXED) % rt->nupstreams;
	send_legs(a, 0, 1, rt->upstreams[first]);
}

/* Attempts so far to upstream u (a leg that found no server included). */
static size_t
legs_to(const struct leg *legs, size_t nlegs, const struct upstream_conf *u)
{
	size_t	i, n = 0;

	for (i = 0; i < nlegs; i++)
		if (legs[i].state != LEG_IDLE && legs[i].up == u)
			n++;
	return (n);
}

/* A leg that ended without a response: fanoutd's error for it. */
static void
answer_failure(struct fanout_action *a, const struct leg *l)
{
	if (l->outcome == LEG_FAILED && l->error == XFER_NO_SOCKET)
		answer_error(a, 503, "over_capacity");
	else if (l->outcome == LEG_FAILED && l->error == XFER_UNAVAILABLE)
		answer_error(a, 503, "no_healthy_upstream");
	else if (l->outcome == LEG_FAILED && l->error == XFER_TIMEOUT)
		answer_error(a, 504, "upstream_timeout");
	else
		answer_error(a, 502, "upstream_failed");
}

/*
 * Attempts go to legs 0, 1, ... in turn. After a connect failure, nothing
 * reached the server: the next attempt goes to another server of the same
 * upstream while it has one not tried (the leg's server choice skips those
 * tried), then on round the ring to an upstream not tried yet. An upstream
 * with no server available is passed over the same way, without counting
 * as an extra attempt: nothing was sent.
 */
static void
proxy_leg_ended(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, size_t li, const struct fanout_event *ev,
    struct fanout_action *a)
{
	const struct leg		*l = &legs[li];
	const struct upstream_conf	*u;
	size_t				 i, k, sent, tried;
	int				 connect;

	if (l->outcome == LEG_OK || l->outcome == LEG_STATUS) {
		if (li > 0)
			a->retries_won = 1;
		answer_leg(a, legs, li, 0);
		return;
	}
	connect = l->outcome == LEG_FAILED && l->error == XFER_CONNECT;
	sent = nlegs - legs_in(legs, nlegs, LEG_IDLE);
	if ((connect || (l->outcome == LEG_FAILED &&
	    l->error == XFER_UNAVAILABLE)) && sent < nlegs) {
		for (i = 0; i < rt->nupstreams && rt->upstreams[i] != l->up; i++)
			;
		for (k = connect ? 0 : 1; k < rt->nupstreams; k++) {
			u = rt->upstreams[(i + k) % rt->nupstreams];
			tried = legs_to(legs, nlegs, u);
			if (tried < u->nservers && (k == 0 || tried == 0))
				break;
		}
		if (k < rt->nupstreams) {
			if (connect && ev->extra != NULL &&
			    !ev->extra(ev->extra_arg, FANOUT_EXTRA_RETRY)) {
				answer_failure(a, l);
				return;
			}
			send_legs(a, sent, 1, u);
			return;
		}
	}
	answer_failure(a, l);
}

/* ---- once: a request not safe to repeat, in first, hedge or quorum --------- */

/* The event's request goes once: it is not safe to repeat and the mode
 * would repeat it (proxy sends once anyway, all asks different services). */
static int
goes_once(const struct route_conf *rt, const struct fanout_event *ev)
{
	return (ev->once && rt->mode != MODE_PROXY && rt->mode != MODE_ALL);
}

static void
once_leg_ended(const struct leg *legs, size_t li, struct fanout_action *a)
{
	const struct leg	*l = &legs[li];

	if (l->outcome == LEG_OK || l->outcome == LEG_STATUS)
		answer_leg(a, legs, li, 1);
	else
		answer_failure(a, l);
}

/* ---- all ------------------------------------------------------------------- */

static void
all_leg_ended(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, struct fanout_action *a)
{
	char	*partial;

	if (legs_in(legs, nlegs, LEG_RUNNING) > 0)
		return;
	if ((partial = failed_names(legs, nlegs)) == NULL) {
		answer_envelope(a, 200, NULL);
		return;
	}
	/* partial = allow still needs something to show for it. */
	if (rt->partial == PARTIAL_ALLOW && any_succeeded(legs, nlegs))
		answer_envelope(a, 200, partial);
	else {
		answer_envelope(a, 502, NULL);
		free(partial);
	}
}

/* ---- first ----------------------------------------------------------------- */

static void
first_leg_ended(const struct leg *legs, size_t nlegs, size_t li,
    struct fanout_action *a)
{
	if (leg_succeeded(&legs[li])) {
		a->supersede = 1;
		answer_leg(a, legs, li, 1);
		return;
	}
	if (legs_in(legs, nlegs, LEG_RUNNING) == 0)
		answer_envelope(a, 502, NULL);
}

/* ---- hedge ----------------------------------------------------------------- */

/*
 * Send the next leg in route order: 1 when sent, 0 if there was none left,
 * -1 when the route's budget refused it (then no more are timed).
 */
static int
hedge_send_next(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, const struct fanout_event *ev, struct fanout_action *a)
{
	size_t	i;

	for (i = 0; i < nlegs && legs[i].state != LEG_IDLE; i++)
		;
	if (i == nlegs)
		return (0);
	if (i > 0) {
		if (ev->extra != NULL &&
		    !ev->extra(ev->extra_arg, FANOUT_EXTRA_HEDGE)) {
			a->timer = FANOUT_TIMER_DISARM;
			return (-1);
		}
		a->hedges_sent = 1;
	}
	/* Arm before starting (the action's order): a leg that fails at
	 * once is reported after, and its decision must not be undone. */
	if (i + 1 < nlegs) {
		a->timer = FANOUT_TIMER_ARM;
		a->timer_ms = rt->hedge_delay_ms;
	} else
		a->timer = FANOUT_TIMER_DISARM;
	send_legs(a, i, 1, NULL);
	return (1);
}

static void
hedge_leg_ended(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, size_t li, const struct fanout_event *ev,
    struct fanout_action *a)
{
	if (leg_succeeded(&legs[li])) {
		a->timer = FANOUT_TIMER_DISARM;
		if (li != 0)
			a->hedges_won = 1;
		a->supersede = 1;
		answer_leg(a, legs, li, 1);
		return;
	}
	/* A failure: hedge at once rather than after the delay. */
	if (hedge_send_next(rt, legs, nlegs, ev, a) == 1)
		return;
	if (legs_in(legs, nlegs, LEG_RUNNING) == 0)
		answer_envelope(a, 502, NULL);
}

/* ---- quorum ---------------------------------------------------------------- */

static void
quorum_leg_ended(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, struct fanout_action *a)
{
	unsigned	ok = 0, failed = 0, n = nlegs, k = rt->quorum;
	size_t		i;

	for (i = 0; i < nlegs; i++) {
		if (legs[i].state != LEG_DONE)
			continue;
		if (leg_succeeded(&legs[i]))
			ok++;
		else
			failed++;
	}
	if (ok >= k) {
		a->supersede = 1;
		answer_envelope(a, 200, NULL);
	} else if (failed > n - k) {
		/* K can no longer be reached: don't wait for the rest. */
		a->supersede = 1;
		answer_envelope(a, 502, NULL);
	}
}

/* ---- the request's cell flipped -------------------------------------------- */

static void
cancelled(const struct route_conf *rt, const struct leg *legs, size_t nlegs,
    enum cancel_reason reason, struct fanout_action *a)
{
	if (rt->mode != MODE_ALL || rt->partial != PARTIAL_ALLOW ||
	    reason != CANCEL_DEADLINE || !any_succeeded(legs, nlegs))
		return;
	/* partial = allow: what arrived in time, the rest marked deadline. */
	answer_envelope(a, 200, failed_names(legs, nlegs));
}

/* ---- entry point ----------------------------------------------------------- */

void
fanout_decide(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs, const struct fanout_event *ev, struct fanout_action *a)
{
	memset(a, 0, sizeof *a);
	a->timer = FANOUT_TIMER_KEEP;
	a->answer = FANOUT_WAIT;
	if (rt == NULL)
		return;		/* not routed: nothing of a mode's to say */

	switch (ev->what) {
	case FANOUT_START:
		if (goes_once(rt, ev)) {
			send_legs(a, 0, 1, NULL);
			a->unsafe_skipped = (unsigned)(nlegs - 1);
			break;
		}
		switch (rt->mode) {
		case MODE_PROXY:
			proxy_start(rt, a);
			break;
		case MODE_HEDGE:
			hedge_send_next(rt, legs, nlegs, ev, a);
			break;
		case MODE_ALL:
		case MODE_FIRST:
		case MODE_QUORUM:
			/* Every leg; any that ends while they are being sent
			 * comes back as FANOUT_LEG_ENDED once all are out. */
			send_legs(a, 0, nlegs, NULL);
			break;
		}
		break;
	case FANOUT_LEG_ENDED:
		if (goes_once(rt, ev)) {
			once_leg_ended(legs, ev->leg, a);
			break;
		}
		switch (rt->mode) {
		case MODE_PROXY:
			proxy_leg_ended(rt, legs, nlegs, ev->leg, ev, a);
			break;
		case MODE_ALL:
			all_leg_ended(rt, legs, nlegs, a);
			break;
		case MODE_FIRST:
			first_leg_ended(legs, nlegs, ev->leg, a);
			break;
		case MODE_HEDGE:
			hedge_leg_ended(rt, legs, nlegs, ev->leg, ev, a);
			break;
		case MODE_QUORUM:
			quorum_leg_ended(rt, legs, nlegs, a);
			break;
		}
		break;
	case FANOUT_HEDGE_TIMER:
		if (rt->mode == MODE_HEDGE && !goes_once(rt, ev))
			hedge_send_next(rt, legs, nlegs, ev, a);
		break;
	case FANOUT_CANCELLED:
		cancelled(rt, legs, nlegs, ev->reason, a);
		break;
	}
}

void
fanout_action_clear(struct fanout_action *a)
{
	free(a->partial);
	a->partial = NULL;
}
