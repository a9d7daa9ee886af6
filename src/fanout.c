/*
 * fanout.c: the modes (see fanout.h).
 *
 *	proxy	one leg; on a connect failure the next upstream in the ring
 *	all	every leg; answer when all have ended
 *	first	every leg; the first success wins, the rest are superseded
 *	hedge	one leg now, one more each hedge_delay or at once after a
 *		failure; the first success wins (Dean and Barroso, "The Tail
 *		at Scale", 2013)
 *	quorum	every leg; answer once K succeeded, or fail as soon as K can
 *		no longer be reached
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "fanout.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "request.h"

static int
leg_succeeded(const struct leg *l)
{
	return (l->state == LEG_DONE && l->outcome == LEG_OK);
}

/* Still waiting for the request's answer? Legs may end synchronously
 * (a transfer that cannot start), deciding before a loop is over. */
static int
undecided(const struct request *r)
{
	return (r->state == REQ_RUNNING && !r->decided &&
	    !cancel_is_set(&r->cancel));
}

static int
any_succeeded(const struct request *r)
{
	size_t	i;

	for (i = 0; i < r->nlegs; i++)
		if (leg_succeeded(&r->legs[i]))
			return (1);
	return (0);
}

/* "a,b": the legs that did not succeed, or NULL when all did. */
static char *
failed_names(const struct request *r)
{
	char	*s = NULL, *n;
	size_t	 i;

	for (i = 0; i < r->nlegs; i++) {
		if (leg_succeeded(&r->legs[i]))
			continue;
		if (asprintf(&n, "%s%s%s", s ? s : "", s ? "," : "",
		    r->legs[i].up->name) == -1) {
			free(s);
			return (NULL);
		}
		free(s);
		s = n;
	}
	return (s);
}

/* ---- proxy ---------------------------------------------------------------- */

static void
proxy_start(struct request *r)
{
	const struct route_conf	*rt = r->route;
	unsigned		 first;

	/* The one mutable field of a configuration (see config.h). */
	first = __atomic_fetch_add(&((struct route_conf *)rt)->rr_next, 1,
	    __ATOMIC_RELAXED) % rt->nupstreams;
	r->legs[0].up = rt->upstreams[first];
	leg_start(&r->legs[0]);
}

static void
proxy_leg_ended(struct request *r, struct leg *l)
{
	const struct route_conf	*rt = r->route;
	size_t			 i;
	struct leg		*next;

	if (l->outcome == LEG_OK || l->outcome == LEG_STATUS) {
		request_answer_leg(r, l, NULL, NULL);
		return;
	}
	if (l->outcome == LEG_FAILED && l->error == XFER_NO_SOCKET) {
		/* Ours, not the upstream's: the next would fail the same. */
		request_error(r, 503, "over_capacity");
		return;
	}
	if (l->outcome == LEG_FAILED && l->error == XFER_CONNECT &&
	    r->legs_sent < rt->nupstreams) {
		/* Nothing reached that upstream: try the next in the ring. */
		for (i = 0; i < rt->nupstreams && rt->upstreams[i] != l->up; i++)
			;
		next = &r->legs[r->legs_sent];
		next->up = rt->upstreams[(i + 1) % rt->nupstreams];
		leg_start(next);
		return;
	}
	if (l->outcome == LEG_FAILED && l->error == XFER_TIMEOUT)
		request_error(r, 504, "upstream_timeout");
	else
		request_error(r, 502, "upstream_failed");
}

/* ---- all ------------------------------------------------------------------- */

static void
all_leg_ended(struct request *r, struct leg *l)
{
	char	*partial;

	if (r->legs_running > 0)
		return;
	if ((partial = failed_names(r)) == NULL) {
		request_answer_envelope(r, 200, NULL);
		return;
	}
	/* partial = allow still needs something to show for it. */
	if (r->route->partial == PARTIAL_ALLOW && any_succeeded(r))
		request_answer_envelope(r, 200, partial);
	else
		request_answer_envelope(r, 502, NULL);
	free(partial);
}

/* ---- first ----------------------------------------------------------------- */

static void
first_leg_ended(struct request *r, struct leg *l)
{
	if (leg_succeeded(l)) {
		request_supersede(r);
		request_answer_leg(r, l, "Fanout-Upstream", l->up->name);
		return;
	}
	if (r->legs_running == 0)
		request_answer_envelope(r, 502, NULL);
}

/* ---- hedge ----------------------------------------------------------------- */

static void	hedge_timer_cb(evutil_socket_t, short, void *);

/* Send the next leg in route order; 0 if there was none left. */
static int
hedge_send_next(struct request *r)
{
	struct timeval	 tv;
	uint64_t	 ms = r->route->hedge_delay_ms;
	size_t		 i;

	for (i = 0; i < r->nlegs && r->legs[i].state != LEG_IDLE; i++)
		;
	if (i == r->nlegs)
		return (0);
	if (i > 0)
		metrics_counter_add(C_HEDGES_SENT, 1);
	/* Arm before starting: the leg may fail, and decide, at once. */
	if (i + 1 < r->nlegs) {
		tv.tv_sec = ms / 1000;
		tv.tv_usec = (ms % 1000) * 1000;
		evtimer_add(r->hedge_timer, &tv);
	} else
		evtimer_del(r->hedge_timer);
	leg_start(&r->legs[i]);
	return (1);
}

static void
hedge_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct request	*r = arg;

	if (undecided(r))
		hedge_send_next(r);
}

static void
hedge_start(struct request *r)
{
	if ((r->hedge_timer = evtimer_new(r->loop->base, hedge_timer_cb, r)) == NULL) {
		request_error(r, 503, "out_of_memory");
		return;
	}
	hedge_send_next(r);
}

static void
hedge_leg_ended(struct request *r, struct leg *l)
{
	if (leg_succeeded(l)) {
		evtimer_del(r->hedge_timer);
		if (l != &r->legs[0])
			metrics_counter_add(C_HEDGES_WON, 1);
		request_supersede(r);
		request_answer_leg(r, l, "Fanout-Upstream", l->up->name);
		return;
	}
	/* A failure: hedge at once rather than after the delay. */
	if (hedge_send_next(r))
		return;
	if (r->legs_running == 0)
		request_answer_envelope(r, 502, NULL);
}

/* ---- quorum ---------------------------------------------------------------- */

static void
quorum_leg_ended(struct request *r, struct leg *l)
{
	unsigned	ok = 0, failed = 0, n = r->nlegs, k = r->route->quorum;
	size_t		i;

	for (i = 0; i < r->nlegs; i++) {
		if (r->legs[i].state != LEG_DONE)
			continue;
		if (leg_succeeded(&r->legs[i]))
			ok++;
		else
			failed++;
	}
	if (ok >= k) {
		request_supersede(r);
		request_answer_envelope(r, 200, NULL);
	} else if (failed > n - k) {
		/* K can no longer be reached: don't wait for the rest. */
		request_supersede(r);
		request_answer_envelope(r, 502, NULL);
	}
}

/* ---- entry points ---------------------------------------------------------- */

static void
mode_leg_ended(struct request *r, struct leg *l)
{
	switch (r->route->mode) {
	case MODE_PROXY:
		proxy_leg_ended(r, l);
		break;
	case MODE_ALL:
		all_leg_ended(r, l);
		break;
	case MODE_FIRST:
		first_leg_ended(r, l);
		break;
	case MODE_HEDGE:
		hedge_leg_ended(r, l);
		break;
	case MODE_QUORUM:
		quorum_leg_ended(r, l);
		break;
	}
}

void
fanout_start(struct request *r)
{
	size_t	i;

	switch (r->route->mode) {
	case MODE_PROXY:
		proxy_start(r);
		break;
	case MODE_HEDGE:
		hedge_start(r);
		break;
	case MODE_ALL:
	case MODE_FIRST:
	case MODE_QUORUM:
		/*
		 * A leg can end before the loop is over (its transfer could
		 * not start): decide only once every leg is out, looking at
		 * those that ended meanwhile in order.
		 */
		r->starting = 1;
		for (i = 0; i < r->nlegs; i++)
			leg_start(&r->legs[i]);
		r->starting = 0;
		for (i = 0; i < r->nlegs && undecided(r); i++) {
			if (r->legs[i].state == LEG_DONE)
				mode_leg_ended(r, &r->legs[i]);
		}
		break;
	}
}

void
fanout_leg_ended(struct request *r, struct leg *l)
{
	if (!r->starting)
		mode_leg_ended(r, l);
}

int
fanout_cancelled(struct request *r, enum cancel_reason reason)
{
	char	*partial;

	if (r->route == NULL || r->route->mode != MODE_ALL ||
	    r->route->partial != PARTIAL_ALLOW || reason != CANCEL_DEADLINE ||
	    r->front == NULL || !any_succeeded(r))
		return (0);
	/* partial = allow: what arrived in time, the rest marked deadline. */
	partial = failed_names(r);
	request_answer_envelope(r, 200, partial);
	free(partial);
	return (1);
}
