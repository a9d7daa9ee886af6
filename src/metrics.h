/*
 * metrics.h: the counters of SPEC section 7, rendered as Prometheus text
 * format 0.0.4. Plain counters and gauges are atomics, so any event-loop
 * thread may touch them; labelled series take a short mutex.
 */
#ifndef FANOUTD_METRICS_H
#define FANOUTD_METRICS_H

#include <stdint.h>

#include "cancel.h"

struct evbuffer;

enum metric_gauge {
	G_CONNECTIONS_ACTIVE,
	G_REQUESTS_IN_FLIGHT,
	G_TRANSFERS_IN_FLIGHT,
	G_NGAUGES
};

enum metric_counter {
	C_CONNECTIONS_TOTAL,
	C_UPSTREAM_BYTES_DISCARDED,
	C_HEDGES_SENT,
	C_HEDGES_WON,
	C_NCOUNTERS
};

void	metrics_init(void);
void	metrics_gauge_add(enum metric_gauge, int64_t);
int64_t	metrics_gauge_get(enum metric_gauge);
void	metrics_counter_add(enum metric_counter, uint64_t);

/* A request answered (or abandoned: code 499), and how long it took. */
void	metrics_request_done(const char *route, int code, uint64_t duration_us);
/* A leg ended: outcome is ok, status, error, timeout or cancelled. */
void	metrics_upstream_done(const char *upstream, const char *outcome);
/* A cancellation that stopped in-flight work, and flip-to-released time. */
void	metrics_cancellation(enum cancel_reason, uint64_t latency_us);
void	metrics_config_reload(int ok);

void	metrics_render(struct evbuffer *);

#endif
