/*
 * health.h: the servers of an upstream: which one a leg goes to, what the
 * end of a leg says of its server, and the active checks.
 *
 * A server is available unless passive health ejected it (eject_after
 * failures in a row, for eject_time doubling up to eject_time_max, at most
 * max_ejected of its upstream at once) or active checks took it out
 * (health_fall fails; health_rise passes bring it back). The state is the
 * server's struct server_state (config.h): shared by every worker and kept
 * by a reload, so everything here may run on any worker at once.
 */
#ifndef FANOUTD_HEALTH_H
#define FANOUTD_HEALTH_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct evbuffer;
struct event_base;
struct server_conf;
struct upstream_conf;
struct upstreams;

/* What the end of a leg says of its server. */
enum health_verdict {
	HEALTH_NONE,	/* nothing: cancelled, too large, out of descriptors */
	HEALTH_PASS,	/* a whole response below 500 */
	HEALTH_FAIL,	/* connect, reset, protocol, timeout, 5xx */
};

/*
 * The server for a leg: weighted round robin or least_request over the
 * available servers, none of the nskip in skip (a request's earlier
 * attempts). NULL when none is left. The leg in flight is counted until
 * health_leg_end().
 */
struct server_conf	*health_pick(const struct upstream_conf *,
			    struct server_conf *const *skip, size_t nskip);
void			 health_leg_end(const struct upstream_conf *,
			    struct server_conf *, enum health_verdict);
int			 health_available(const struct server_conf *);

/*
 * The active checks one worker runs (worker id of nworkers: servers are
 * dealt out in turn), on its loop, through its curl multi. NULL when it has
 * none to run (or out of memory, logged). Freeing stops them, aborting a
 * check in flight.
 */
struct health_checks	*health_checks_new(struct event_base *,
			    struct upstreams *, struct config *, unsigned id,
			    unsigned nworkers);
void			 health_checks_free(struct health_checks *);

/* fanoutd_upstream_server_up and fanoutd_upstream_ejections_total for
 * every server of conf. */
void			 health_render(struct evbuffer *, const struct config *);

#endif
