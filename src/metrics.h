/*
 * metrics.h: the counters of fanoutd(8), METRICS, rendered as Prometheus text
 * format 0.0.4. Any thread may record: each thread writes a shard of its
 * own (no lock, no shared cache line), and metrics_render adds them up.
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
	G_TRANSFERS_PAUSED,
	G_NGAUGES
};

enum metric_counter {
	C_CONNECTIONS_TOTAL,
	C_UPSTREAM_BYTES_DISCARDED,
	C_HEDGES_SENT,
	C_HEDGES_WON,
	C_H2_STREAMS_RESET,
	C_NCOUNTERS
};

/* Counters with one label of a few fixed values. */
enum metric_labelled {
	L_REQUESTS_PROTO,	/* HTTP/1.0, HTTP/1.1, HTTP/2.0 */
	L_CONNECTIONS_PROTO,	/* http/1.1, h2 */
	L_TLS_HANDSHAKES,	/* ok, error */
	L_H2_FLOODS,		/* rapid_reset, continuation */
	L_NLABELLED
};
enum { PROTO_H1 = 0, PROTO_H2 = 1 };
enum { TLS_OK = 0, TLS_ERROR = 1 };
enum { FLOOD_RAPID_RESET = 0, FLOOD_CONTINUATION = 1 };

void	metrics_init(void);
void	metrics_gauge_add(enum metric_gauge, int64_t);
int64_t	metrics_gauge_get(enum metric_gauge);
void	metrics_counter_add(enum metric_counter, uint64_t);
void	metrics_labelled_add(enum metric_labelled, unsigned value, uint64_t);
/* A request answered: version 0 (HTTP/1.0), 1 (HTTP/1.1) or 2 (HTTP/2). */
void	metrics_request_proto(int version);

/* A request answered (or abandoned: code 499), and how long it took. */
void	metrics_request_done(const char *route, int code, uint64_t duration_us);
/* A gRPC call answered with grpc_status (0..16). */
void	metrics_grpc_request(const char *route, int grpc_status);
/* A leg ended: outcome is ok, status, error, timeout or cancelled. */
void	metrics_upstream_done(const char *upstream, const char *outcome);
/* Extra attempts of a route: kind hedge or retry, outcome sent, won,
 * skipped_budget or skipped_unsafe. */
void	metrics_extra_attempt(const char *route, const char *kind,
	    const char *outcome, uint64_t);
/* The wasted-work ledger: a leg cancelled in flight for reason, after us
 * microseconds, throwing bytes of its response away. */
void	metrics_wasted(const char *upstream, enum cancel_reason, uint64_t us,
	    uint64_t bytes);
/* A cancellation that stopped in-flight work, and flip-to-released time. */
void	metrics_cancellation(enum cancel_reason, uint64_t latency_us);
void	metrics_config_reload(int ok);

void	metrics_render(struct evbuffer *);

#endif
