/*
 * fanout.h: the modes of fanoutd(8), MODES (proxy, all, first, hedge,
 * quorum): which legs to send when, and when and how the answer is decided.
 *
 * A mode is a pure function of the route, the request's legs and what just
 * happened; it says what to do next as a struct fanout_action, and the
 * request (request.c) carries it out: it starts the legs, owns the hedge
 * timer, cuts the losers and writes the answer. fanout.c touches no request,
 * no event loop and no socket, so every mode can be driven by hand (see
 * tests/unit/test_fanout.c).
 *
 * The request asks at four points: when it is dispatched, when one of its
 * legs ended (whatever ended it), when the hedge timer fired, and when its
 * own cancel cell flipped. The second and third only while no answer has
 * been chosen and the cell has not flipped; the fourth only while there is
 * a client to answer.
 */
#ifndef FANOUTD_FANOUT_H
#define FANOUTD_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "cancel.h"

struct leg;
struct route_conf;
struct upstream_conf;

enum fanout_what {
	FANOUT_START,		/* dispatched: no leg sent yet */
	FANOUT_LEG_ENDED,	/* legs[leg] is LEG_DONE now */
	FANOUT_HEDGE_TIMER,	/* the timer armed by a FANOUT_TIMER_ARM fired */
	FANOUT_CANCELLED,	/* the request's cell flipped with reason (the
				   legs that were running are LEG_DONE by now,
				   outcome LEG_CANCELLED) */
};

enum fanout_extra {
	FANOUT_EXTRA_HEDGE,	/* a hedge after the first leg */
	FANOUT_EXTRA_RETRY,	/* mode proxy: again, after a connect failure */
};

struct fanout_event {
	enum fanout_what	 what;
	size_t			 leg;		/* FANOUT_LEG_ENDED */
	enum cancel_reason	 reason;	/* FANOUT_CANCELLED */
	/*
	 * The request is not safe to repeat (fanoutd(8), HEALTH AND
	 * BUDGETS): first, hedge and quorum send it once, to the route's
	 * first upstream (leg 0), and answer as proxy does.
	 */
	int			 once;
	/* May an extra attempt go now? Asked once per attempt, just before
	 * it would be sent; 0 and it is not. NULL: always. */
	int			(*extra)(void *, enum fanout_extra);
	void			*extra_arg;
};

enum fanout_timer {
	FANOUT_TIMER_KEEP,	/* leave the hedge timer as it is */
	FANOUT_TIMER_ARM,	/* (re)arm it to fire in timer_ms */
	FANOUT_TIMER_DISARM,
};

enum fanout_answer {
	FANOUT_WAIT,		/* no answer yet; after FANOUT_CANCELLED: none
				   from the mode, the request gives its own */
	FANOUT_LEG,		/* legs[leg]'s response as it is */
	FANOUT_ENVELOPE,	/* the JSON envelope of every leg, with status */
	FANOUT_ERROR,		/* fanoutd's own error: status and error */
};

/*
 * What to do, in this order:
 *	1. timer		the hedge timer
 *	2. hedges_sent/won,	add to those counters
 *	   retries_won,
 *	   unsafe_skipped
 *	3. supersede		cut every leg still running (reason superseded)
 *	4. start, nstart	send legs[start] .. legs[start + nstart - 1], to
 *				up when it is set (mode proxy's ring), else each
 *				to its own leg.up. A leg that ends while they are
 *				being sent (its transfer could not start) is
 *				reported once the last is out: one
 *				FANOUT_LEG_ENDED each, in order, while no answer
 *				has been chosen. So the timer is set before, and
 *				what is decided on such a leg has the last word.
 *	5. answer		(never together with a start)
 * All zero (FANOUT_TIMER_KEEP, FANOUT_WAIT, nstart 0): nothing to do.
 */
struct fanout_action {
	enum fanout_timer		 timer;
	uint64_t			 timer_ms;
	unsigned			 hedges_sent;
	unsigned			 hedges_won;
	unsigned			 retries_won;
	unsigned			 unsafe_skipped; /* legs not sent: once */
	int				 supersede;
	size_t				 start;
	size_t				 nstart;
	const struct upstream_conf	*up;
	enum fanout_answer		 answer;
	int				 status;	/* _ENVELOPE, _ERROR */
	size_t				 leg;		/* _LEG */
	/* _LEG: one more header line ("Fanout-Upstream: users"), or NULL. */
	const char			*header_name;
	const char			*header_value;
	/* _ENVELOPE: Fanout-Partial, the legs that did not succeed ("a,b"),
	 * or NULL. malloc'd: release the action with fanout_action_clear(). */
	char				*partial;
	const char			*error;		/* _ERROR */
};

/*
 * Decide what to do after ev, from the route and the legs (nlegs of them,
 * one per upstream of the route, leg i to upstream i in route order except
 * in mode proxy, where up is set when a leg is sent). The action is filled
 * in whole. Mode proxy takes the next turn of the route's round robin at
 * FANOUT_START (route_conf.rr_next); nothing else is written.
 */
void	fanout_decide(const struct route_conf *, const struct leg *legs,
	    size_t nlegs, const struct fanout_event *, struct fanout_action *);
/* Free what an action holds (partial). */
void	fanout_action_clear(struct fanout_action *);

#endif
