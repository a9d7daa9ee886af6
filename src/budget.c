/*
 * budget.c: extra attempts within budget (see budget.h).
 *
 * The window is BUDGET_SLOTS slots of one second each; a slot is cleared
 * when its second comes round again. An extra attempt may go when
 *
 *	extra sent in the window < requests in the window * budget / 100
 *				   + budget_min * BUDGET_SLOTS
 *
 * the asking request counted among the requests. A lock per route: taken
 * once per request of a route that can send extra attempts, and once per
 * extra attempt.
 */
#include <pthread.h>
#include <stdint.h>

#include "budget.h"
#include "config.h"
#include "metrics.h"
#include "util.h"

static const char *const kind_names[] = { "hedge", "retry" };

/* The slot of this second, cleared if it held an older one. Locked. */
static unsigned
slot_now(struct route_state *st, uint64_t sec)
{
	unsigned	i = (unsigned)(sec % BUDGET_SLOTS);

	if (st->slot_sec[i] != sec) {
		st->slot_sec[i] = sec;
		st->requests[i] = 0;
		st->extra[i] = 0;
	}
	return (i);
}

int
budget_applies(const struct route_conf *rt)
{
	size_t	i, n = 0;

	if (rt->mode == MODE_HEDGE)
		return (rt->nupstreams > 1);
	if (rt->mode != MODE_PROXY)
		return (0);
	for (i = 0; i < rt->nupstreams; i++)
		n += rt->upstreams[i]->nservers;
	return (n > 1);
}

void
budget_request(const struct route_conf *rt)
{
	struct route_state	*st = rt->st;
	uint64_t		 sec = now_ms() / 1000;

	pthread_mutex_lock(&st->entry.lock);
	st->requests[slot_now(st, sec)]++;
	pthread_mutex_unlock(&st->entry.lock);
}

int
budget_take(const struct route_conf *rt, enum budget_kind kind)
{
	struct route_state	*st = rt->st;
	uint64_t		 sec = now_ms() / 1000, requests = 0, extra = 0;
	unsigned		 i, cur;
	int			 ok;

	pthread_mutex_lock(&st->entry.lock);
	cur = slot_now(st, sec);
	for (i = 0; i < BUDGET_SLOTS; i++) {
		if (sec - st->slot_sec[i] >= BUDGET_SLOTS)
			continue;	/* older than the window */
		requests += st->requests[i];
		extra += st->extra[i];
	}
	ok = extra < requests * rt->budget_pct / 100 +
	    (uint64_t)rt->budget_min * BUDGET_SLOTS;
	if (ok)
		st->extra[cur]++;
	pthread_mutex_unlock(&st->entry.lock);
	metrics_extra_attempt(rt->name, kind_names[kind],
	    ok ? "sent" : "skipped_budget", 1);
	return (ok);
}
