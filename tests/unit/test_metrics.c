/*
 * test_metrics.c: the per-thread shards of metrics.c add up to what the
 * threads recorded, in the order and the text format of one process-wide
 * table.
 *
 * The metrics are process-wide and never reset, and cmocka runs the tests
 * in one process in turn: test_golden runs first, on a fresh process; the
 * others use series of their own and compare gauges and counters with a
 * render taken before them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "cancel.h"
#include "metrics.h"

/* ---- helpers ------------------------------------------------------- */

/* metrics_render's text, NUL-terminated; free() it. */
static char *
render(void)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 n;
	char		*s;

	assert_non_null(b);
	metrics_render(b);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return (s);
}

/* Where the sample line "series value" starts in text, or NULL. */
static const char *
find_line(const char *text, const char *series)
{
	const char	*p = text;
	size_t		 n = strlen(series);

	while (p != NULL && *p != '\0') {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return (p);
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return (NULL);
}

/* The value of a sample; fails the test if it is missing. */
static double
value(const char *text, const char *series)
{
	const char	*p = find_line(text, series);
	char		*end;
	double		 v;

	if (p == NULL)
		fail_msg("no sample %s", series);
	v = strtod(p + strlen(series) + 1, &end);
	assert_true(*end == '\n');
	return (v);
}

/* The value of a sample, or 0 when it is not there. */
static double
value0(const char *text, const char *series)
{
	return (find_line(text, series) != NULL ? value(text, series) : 0);
}

/* Offset of a sample's line, to compare orders; fails if missing. */
static ptrdiff_t
pos(const char *text, const char *series)
{
	const char	*p = find_line(text, series);

	if (p == NULL)
		fail_msg("no sample %s", series);
	return (p - text);
}

static const double	duration_bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define NDUR	(sizeof duration_bounds / sizeof duration_bounds[0])

/* The bucket an observation falls in, as the seconds compare. */
static size_t
duration_bucket(uint64_t us)
{
	size_t	i;

	for (i = 0; i < NDUR && us / 1e6 > duration_bounds[i]; i++)
		;
	return (i);
}

/* ---- the golden text ----------------------------------------------- */

/*
 * The text the process-wide table with its mutex rendered for the records
 * of test_golden (the metrics.c before the shards, this same test built
 * on it); health_render's part is admin.c's and not in it.
 */
static const char golden[] =
    "# HELP fanoutd_connections_active Client connections open.\n"
    "# TYPE fanoutd_connections_active gauge\n"
    "fanoutd_connections_active 2\n"
    "# HELP fanoutd_requests_in_flight Requests read and not yet answered.\n"
    "# TYPE fanoutd_requests_in_flight gauge\n"
    "fanoutd_requests_in_flight 2\n"
    "# HELP fanoutd_upstream_transfers_in_flight Upstream transfers started and not yet released.\n"
    "# TYPE fanoutd_upstream_transfers_in_flight gauge\n"
    "fanoutd_upstream_transfers_in_flight 1\n"
    "# HELP fanoutd_upstream_transfers_paused Upstream transfers held back until their client reads more.\n"
    "# TYPE fanoutd_upstream_transfers_paused gauge\n"
    "fanoutd_upstream_transfers_paused -2\n"
    "# HELP fanoutd_connections_total Client connections accepted.\n"
    "# TYPE fanoutd_connections_total counter\n"
    "fanoutd_connections_total 5\n"
    "# HELP fanoutd_upstream_bytes_discarded_total Bytes of upstream responses thrown away by cancellations.\n"
    "# TYPE fanoutd_upstream_bytes_discarded_total counter\n"
    "fanoutd_upstream_bytes_discarded_total 1234\n"
    "# HELP fanoutd_hedges_sent_total Hedged upstream requests sent (mode hedge, beyond the first).\n"
    "# TYPE fanoutd_hedges_sent_total counter\n"
    "fanoutd_hedges_sent_total 2\n"
    "# HELP fanoutd_hedges_won_total Hedged upstream requests whose answer was the one returned.\n"
    "# TYPE fanoutd_hedges_won_total counter\n"
    "fanoutd_hedges_won_total 1\n"
    "# HELP fanoutd_h2_streams_reset_total HTTP/2 RST_STREAM frames received from clients.\n"
    "# TYPE fanoutd_h2_streams_reset_total counter\n"
    "fanoutd_h2_streams_reset_total 1\n"
    "# HELP fanoutd_requests_by_proto_total Requests answered, by protocol version.\n"
    "# TYPE fanoutd_requests_by_proto_total counter\n"
    "fanoutd_requests_by_proto_total{proto=\"HTTP/1.0\"} 1\n"
    "fanoutd_requests_by_proto_total{proto=\"HTTP/1.1\"} 2\n"
    "fanoutd_requests_by_proto_total{proto=\"HTTP/2.0\"} 1\n"
    "# HELP fanoutd_connections_by_proto_total Client connections, by the protocol they came to speak.\n"
    "# TYPE fanoutd_connections_by_proto_total counter\n"
    "fanoutd_connections_by_proto_total{proto=\"http/1.1\"} 0\n"
    "fanoutd_connections_by_proto_total{proto=\"h2\"} 4\n"
    "# HELP fanoutd_tls_handshakes_total TLS handshakes with clients, by result.\n"
    "# TYPE fanoutd_tls_handshakes_total counter\n"
    "fanoutd_tls_handshakes_total{result=\"ok\"} 0\n"
    "fanoutd_tls_handshakes_total{result=\"error\"} 1\n"
    "# HELP fanoutd_h2_floods_total HTTP/2 connections closed for a flood, by kind.\n"
    "# TYPE fanoutd_h2_floods_total counter\n"
    "fanoutd_h2_floods_total{kind=\"rapid_reset\"} 0\n"
    "fanoutd_h2_floods_total{kind=\"continuation\"} 1\n"
    "# HELP fanoutd_requests_total Requests answered, by route and status code (499: client closed).\n"
    "# TYPE fanoutd_requests_total counter\n"
    "fanoutd_requests_total{route=\"r1\",code=\"200\"} 2\n"
    "fanoutd_requests_total{route=\"r2\",code=\"404\"} 1\n"
    "fanoutd_requests_total{route=\"r1\",code=\"500\"} 1\n"
    "fanoutd_requests_total{route=\"\",code=\"499\"} 1\n"
    "fanoutd_requests_total{route=\"q\\\"b\\\\c\\nd\",code=\"200\"} 1\n"
    "fanoutd_requests_total{route=\"r2\",code=\"0\"} 1\n"
    "# HELP fanoutd_request_duration_seconds Time from the first byte of a request to its answer, by route.\n"
    "# TYPE fanoutd_request_duration_seconds histogram\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.001\"} 2\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.0025\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.005\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.01\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.025\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.05\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.1\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.25\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"0.5\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"1\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"2.5\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"5\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"10\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r1\",le=\"+Inf\"} 3\n"
    "fanoutd_request_duration_seconds_sum{route=\"r1\"} 0.002503\n"
    "fanoutd_request_duration_seconds_count{route=\"r1\"} 3\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.001\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.0025\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.005\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.01\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.025\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.05\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.1\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.25\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"0.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"1\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"2.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"10\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"r2\",le=\"+Inf\"} 2\n"
    "fanoutd_request_duration_seconds_sum{route=\"r2\"} 20.000001\n"
    "fanoutd_request_duration_seconds_count{route=\"r2\"} 2\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.001\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.0025\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.005\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.01\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.025\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.05\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.1\"} 0\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.25\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"0.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"1\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"2.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"10\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"\",le=\"+Inf\"} 1\n"
    "fanoutd_request_duration_seconds_sum{route=\"\"} 0.25\n"
    "fanoutd_request_duration_seconds_count{route=\"\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.001\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.0025\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.005\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.01\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.025\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.05\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.1\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.25\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"0.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"1\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"2.5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"5\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"10\"} 1\n"
    "fanoutd_request_duration_seconds_bucket{route=\"q\\\"b\\\\c\\nd\",le=\"+Inf\"} 1\n"
    "fanoutd_request_duration_seconds_sum{route=\"q\\\"b\\\\c\\nd\"} 7e-06\n"
    "fanoutd_request_duration_seconds_count{route=\"q\\\"b\\\\c\\nd\"} 1\n"
    "# HELP fanoutd_upstream_requests_total Upstream requests (legs) ended, by upstream and outcome.\n"
    "# TYPE fanoutd_upstream_requests_total counter\n"
    "fanoutd_upstream_requests_total{upstream=\"u1\",outcome=\"ok\"} 2\n"
    "fanoutd_upstream_requests_total{upstream=\"u2\",outcome=\"timeout\"} 1\n"
    "fanoutd_upstream_requests_total{upstream=\"u1\",outcome=\"status\"} 1\n"
    "# HELP fanoutd_cancellations_total Cancellations that stopped in-flight upstream work, by reason.\n"
    "# TYPE fanoutd_cancellations_total counter\n"
    "fanoutd_cancellations_total{reason=\"client_closed\"} 2\n"
    "fanoutd_cancellations_total{reason=\"deadline\"} 1\n"
    "fanoutd_cancellations_total{reason=\"shutdown\"} 0\n"
    "fanoutd_cancellations_total{reason=\"superseded\"} 0\n"
    "# HELP fanoutd_cancel_latency_seconds Time from a cancel cell's flip until every transfer of it is released.\n"
    "# TYPE fanoutd_cancel_latency_seconds histogram\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"1e-05\"} 1\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"2.5e-05\"} 1\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"5e-05\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.0001\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.00025\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.0005\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.001\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.0025\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.005\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.01\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"0.1\"} 2\n"
    "fanoutd_cancel_latency_seconds_bucket{le=\"+Inf\"} 3\n"
    "fanoutd_cancel_latency_seconds_sum 0.20004\n"
    "fanoutd_cancel_latency_seconds_count 3\n"
    "# HELP fanoutd_grpc_requests_total gRPC calls answered, by route and grpc-status (1: client cancelled).\n"
    "# TYPE fanoutd_grpc_requests_total counter\n"
    "fanoutd_grpc_requests_total{route=\"g\",grpc_status=\"0\"} 2\n"
    "fanoutd_grpc_requests_total{route=\"g\",grpc_status=\"1\"} 1\n"
    "# HELP fanoutd_config_reloads_total Configuration reloads, by result.\n"
    "# TYPE fanoutd_config_reloads_total counter\n"
    "fanoutd_config_reloads_total{result=\"ok\"} 2\n"
    "fanoutd_config_reloads_total{result=\"error\"} 1\n"
    "# HELP fanoutd_extra_attempts_total Extra attempts (hedges after a request's first leg, retries), by route, kind and outcome.\n"
    "# TYPE fanoutd_extra_attempts_total counter\n"
    "fanoutd_extra_attempts_total{route=\"r1\",kind=\"hedge\",outcome=\"won\"} 3\n"
    "fanoutd_extra_attempts_total{route=\"r1\",kind=\"retry\",outcome=\"skipped_budget\"} 1\n"
    "# HELP fanoutd_upstream_wasted_seconds_total Time upstream legs ran before they were cancelled, by upstream and cancel reason.\n"
    "# TYPE fanoutd_upstream_wasted_seconds_total counter\n"
    "fanoutd_upstream_wasted_seconds_total{upstream=\"u1\",reason=\"superseded\"} 1.500001\n"
    "fanoutd_upstream_wasted_seconds_total{upstream=\"u2\",reason=\"client_closed\"} 0.000250\n"
    "# HELP fanoutd_upstream_wasted_bytes_total Response bytes received from upstream legs, then discarded by their cancellation, by upstream and cancel reason.\n"
    "# TYPE fanoutd_upstream_wasted_bytes_total counter\n"
    "fanoutd_upstream_wasted_bytes_total{upstream=\"u1\",reason=\"superseded\"} 4097\n"
    "fanoutd_upstream_wasted_bytes_total{upstream=\"u2\",reason=\"client_closed\"} 0\n";

static void
test_golden(void **state)
{
	const char	*path;
	FILE		*f;
	char		*text;

	(void)state;
	metrics_init();
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, 3);
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, -1);
	metrics_gauge_add(G_REQUESTS_IN_FLIGHT, 2);
	metrics_gauge_add(G_TRANSFERS_IN_FLIGHT, 1);
	metrics_gauge_add(G_TRANSFERS_PAUSED, -2);
	metrics_counter_add(C_CONNECTIONS_TOTAL, 5);
	metrics_counter_add(C_UPSTREAM_BYTES_DISCARDED, 1234);
	metrics_counter_add(C_HEDGES_SENT, 2);
	metrics_counter_add(C_HEDGES_WON, 1);
	metrics_counter_add(C_H2_STREAMS_RESET, 1);
	metrics_request_proto(0);
	metrics_request_proto(1);
	metrics_request_proto(1);
	metrics_request_proto(2);
	metrics_request_proto(3);	/* not a version: not counted */
	metrics_labelled_add(L_CONNECTIONS_PROTO, PROTO_H2, 4);
	metrics_labelled_add(L_TLS_HANDSHAKES, TLS_ERROR, 1);
	metrics_labelled_add(L_H2_FLOODS, FLOOD_CONTINUATION, 1);
	metrics_labelled_add(L_H2_FLOODS, 7, 1);	/* out of range */

	metrics_request_done("r1", 200, 1500);
	metrics_request_done("r1", 200, 1000);		/* on a bound: le */
	metrics_request_done("r2", 404, 20000000);	/* +Inf only */
	metrics_request_done("r1", 500, 3);
	metrics_request_done(NULL, 499, 250000);
	metrics_request_done("q\"b\\c\nd", 200, 7);	/* escaped */
	metrics_request_done("r2", -5, 1);		/* code shown as 0 */
	metrics_grpc_request("g", 0);
	metrics_grpc_request("g", 1);
	metrics_grpc_request("g", 0);
	metrics_upstream_done("u1", "ok");
	metrics_upstream_done("u2", "timeout");
	metrics_upstream_done("u1", "ok");
	metrics_upstream_done("u1", "status");
	metrics_extra_attempt("r1", "hedge", "won", 2);
	metrics_extra_attempt("r1", "retry", "skipped_budget", 1);
	metrics_extra_attempt("r1", "hedge", "won", 1);
	metrics_wasted("u1", CANCEL_SUPERSEDED, 1500000, 4096);
	metrics_wasted("u1", CANCEL_SUPERSEDED, 1, 1);
	metrics_wasted("u2", CANCEL_CLIENT_CLOSED, 250, 0);
	metrics_cancellation(CANCEL_DEADLINE, 30);
	metrics_cancellation(CANCEL_CLIENT_CLOSED, 200000);
	metrics_cancellation(CANCEL_CLIENT_CLOSED, 10);	/* on a bound */
	metrics_config_reload(1);
	metrics_config_reload(0);
	metrics_config_reload(1);

	text = render();
	/* TEST_METRICS_PRINT=FILE: the text is written there as well. */
	if ((path = getenv("TEST_METRICS_PRINT")) != NULL &&
	    (f = fopen(path, "w")) != NULL) {
		fputs(text, f);
		fclose(f);
	}
	assert_string_equal(text, golden);
	free(text);
}

/* ---- several threads ----------------------------------------------- */

#define NTHREADS	4
#define NREQ		3000

static const char *const outcomes[] = { "ok", "status", "error" };

/* A thread's records are a function of its number: what it did is known. */
static uint64_t
req_us(int t, int j)
{
	return ((uint64_t)(j * 7919 + t * 104729) % 12000000);
}

static void *
recorder(void *arg)
{
	int	t = (int)(intptr_t)arg, j;

	for (j = 0; j < NREQ; j++) {
		metrics_gauge_add(G_REQUESTS_IN_FLIGHT, 1);
		metrics_gauge_add(G_TRANSFERS_IN_FLIGHT, 1);
		metrics_request_done(j % 2 ? "mt_a" : "mt_b", 200 + (j % 3),
		    req_us(t, j));
		metrics_upstream_done("mt_u", outcomes[j % 3]);
		metrics_counter_add(C_HEDGES_SENT, 2);
		metrics_request_proto(1);
		metrics_gauge_add(G_REQUESTS_IN_FLIGHT, -1);
		if (j % 4 == 0)
			metrics_gauge_add(G_TRANSFERS_IN_FLIGHT, -1);
	}
	/* A gauge moved down by a thread that did not move it up. */
	metrics_gauge_add(G_TRANSFERS_PAUSED, -(int64_t)t);
	if (t % 2 == 0)
		metrics_wasted("mt_u", CANCEL_DEADLINE, 1000001, 7);
	metrics_cancellation(CANCEL_SHUTDOWN, 20);
	return (NULL);
}

static void
test_threads_add_up(void **state)
{
	pthread_t	 th[NTHREADS];
	uint64_t	 buckets[2][NDUR + 1], count[2], sum_us[2], cum;
	char		*before, *after, s[256];
	int		 t, j, r, c;
	size_t		 i;

	(void)state;
	before = render();
	for (t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, recorder,
		    (void *)(intptr_t)t), 0);
	for (t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	after = render();

	/* Gauges: deltas of every thread added up. */
	assert_true(value(after, "fanoutd_requests_in_flight") ==
	    value(before, "fanoutd_requests_in_flight"));
	assert_true(value(after, "fanoutd_upstream_transfers_in_flight") -
	    value(before, "fanoutd_upstream_transfers_in_flight") ==
	    NTHREADS * (NREQ - NREQ / 4));
	assert_true(value(after, "fanoutd_upstream_transfers_paused") -
	    value(before, "fanoutd_upstream_transfers_paused") ==
	    -(0 + 1 + 2 + 3));
	assert_true(value(after, "fanoutd_hedges_sent_total") -
	    value(before, "fanoutd_hedges_sent_total") == 2.0 * NTHREADS * NREQ);
	assert_true(value(after,
	    "fanoutd_requests_by_proto_total{proto=\"HTTP/1.1\"}") -
	    value(before,
	    "fanoutd_requests_by_proto_total{proto=\"HTTP/1.1\"}") ==
	    (double)NTHREADS * NREQ);

	/* Counters by label. */
	for (r = 0; r < 2; r++) {
		for (c = 0; c < 3; c++) {
			double	want = 0;

			for (j = 0; j < NREQ; j++)
				want += (j % 2 == 0) == r && j % 3 == c;
			snprintf(s, sizeof s, "fanoutd_requests_total{route="
			    "\"mt_%c\",code=\"%d\"}", r ? 'b' : 'a', 200 + c);
			assert_true(value(after, s) == want * NTHREADS);
		}
	}
	for (c = 0; c < 3; c++) {
		snprintf(s, sizeof s, "fanoutd_upstream_requests_total{"
		    "upstream=\"mt_u\",outcome=\"%s\"}", outcomes[c]);
		assert_true(value(after, s) == (double)(NREQ / 3) * NTHREADS);
	}
	assert_true(value(after, "fanoutd_upstream_wasted_seconds_total{"
	    "upstream=\"mt_u\",reason=\"deadline\"}") == 2.000002);
	assert_non_null(strstr(after, "fanoutd_upstream_wasted_seconds_total{"
	    "upstream=\"mt_u\",reason=\"deadline\"} 2.000002\n"));
	assert_true(value(after, "fanoutd_upstream_wasted_bytes_total{"
	    "upstream=\"mt_u\",reason=\"deadline\"}") == 14);
	assert_true(value(after,
	    "fanoutd_cancellations_total{reason=\"shutdown\"}") -
	    value(before, "fanoutd_cancellations_total{reason=\"shutdown\"}")
	    == NTHREADS);
	assert_true(value(after, "fanoutd_cancel_latency_seconds_bucket{"
	    "le=\"1e-05\"}") - value(before,
	    "fanoutd_cancel_latency_seconds_bucket{le=\"1e-05\"}") == 0);
	assert_true(value(after, "fanoutd_cancel_latency_seconds_bucket{"
	    "le=\"2.5e-05\"}") - value(before,
	    "fanoutd_cancel_latency_seconds_bucket{le=\"2.5e-05\"}") ==
	    NTHREADS);

	/* The histogram: every bucket, cumulative, _sum and _count. */
	memset(buckets, 0, sizeof buckets);
	memset(count, 0, sizeof count);
	memset(sum_us, 0, sizeof sum_us);
	for (t = 0; t < NTHREADS; t++) {
		for (j = 0; j < NREQ; j++) {
			r = j % 2 ? 0 : 1;	/* 0: mt_a */
			buckets[r][duration_bucket(req_us(t, j))]++;
			count[r]++;
			sum_us[r] += req_us(t, j);
		}
	}
	for (r = 0; r < 2; r++) {
		for (cum = 0, i = 0; i <= NDUR; i++) {
			cum += buckets[r][i];
			if (i < NDUR)
				snprintf(s, sizeof s, "fanoutd_request_duration_"
				    "seconds_bucket{route=\"mt_%c\",le=\"%g\"}",
				    r ? 'b' : 'a', duration_bounds[i]);
			else
				snprintf(s, sizeof s, "fanoutd_request_duration_"
				    "seconds_bucket{route=\"mt_%c\",le=\"+Inf\"}",
				    r ? 'b' : 'a');
			assert_true(value(after, s) == (double)cum);
		}
		snprintf(s, sizeof s, "fanoutd_request_duration_seconds_count{"
		    "route=\"mt_%c\"}", r ? 'b' : 'a');
		assert_true(value(after, s) == (double)count[r]);
		snprintf(s, sizeof s, "fanoutd_request_duration_seconds_sum{"
		    "route=\"mt_%c\"} %.9g\n", r ? 'b' : 'a', sum_us[r] / 1e6);
		assert_non_null(strstr(after, s));
	}

	/* Order of first use, process-wide: mt_b's request came first. */
	assert_true(pos(after, "fanoutd_request_duration_seconds_count{"
	    "route=\"mt_b\"}") < pos(after,
	    "fanoutd_request_duration_seconds_count{route=\"mt_a\"}"));
	free(before);
	free(after);
}

/* ---- order of first use across threads ----------------------------- */

struct script {
	const char	*routes[4];
};

static void *
play(void *arg)
{
	const struct script	*sc = arg;
	size_t			 i;

	for (i = 0; i < 4 && sc->routes[i] != NULL; i++)
		metrics_request_done(sc->routes[i], 200, 5);
	return (NULL);
}

static void
run_script(const struct script *sc)
{
	pthread_t	th;

	assert_int_equal(pthread_create(&th, NULL, play, (void *)sc), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
}

static void
test_order_of_first_use(void **state)
{
	const struct script	 one = { { "ord_b", "ord_d", NULL } };
	const struct script	 two = { { "ord_a", "ord_b", "ord_c", NULL } };
	const char		*order[] = { "ord_b", "ord_d", "ord_a", "ord_c" };
	char			*text, s[128];
	ptrdiff_t		 last = -1, p;
	size_t			 i;

	(void)state;
	run_script(&one);
	run_script(&two);
	metrics_request_done("ord_d", 200, 5);	/* this thread: not first */
	text = render();
	for (i = 0; i < 4; i++) {
		snprintf(s, sizeof s, "fanoutd_requests_total{route=\"%s\","
		    "code=\"200\"}", order[i]);
		p = pos(text, s);
		assert_true(p > last);
		last = p;
		assert_true(value(text, s) == (i == 0 || i == 1 ? 2 : 1));
	}
	for (last = -1, i = 0; i < 4; i++) {
		snprintf(s, sizeof s, "fanoutd_request_duration_seconds_sum{"
		    "route=\"%s\"}", order[i]);
		p = pos(text, s);
		assert_true(p > last);
		last = p;
	}
	free(text);
}

/* ---- a render while threads record --------------------------------- */

#define NBUSY		3
#define NBUSY_ROUTES	97	/* new series all along: lists and hashes grow */
#define NRENDERS	200

#define NROUNDS_MIN	20000	/* rounds of each thread while renders run */

static atomic_int	busy_stop;
static atomic_long	busy_rounds[NBUSY];

/* Records until told to stop (and at least twice over every route); the
 * number of rounds it did is its result. */
static void *
busy(void *arg)
{
	char	route[32];
	int	t = (int)(intptr_t)arg;
	long	j;

	for (j = 0; j < 2 * NBUSY_ROUTES ||
	    !atomic_load_explicit(&busy_stop, memory_order_relaxed); j++) {
		snprintf(route, sizeof route, "cr_%ld", (j + t * 13) %
		    NBUSY_ROUTES);
		metrics_request_done(route, 200, (uint64_t)j);
		metrics_upstream_done(route, "ok");
		metrics_gauge_add(G_CONNECTIONS_ACTIVE, 1);
		metrics_counter_add(C_H2_STREAMS_RESET, 1);
		atomic_store_explicit(&busy_rounds[t], j + 1,
		    memory_order_relaxed);
	}
	return ((void *)(intptr_t)j);
}

/* Every sample whose line starts with prefix, added up. */
static double
total(const char *text, const char *prefix)
{
	const char	*p = text;
	double		 v = 0;
	size_t		 n = strlen(prefix);

	for (; p != NULL && *p != '\0'; p = strchr(p, '\n'), p += p != NULL) {
		if (strncmp(p, prefix, n) == 0)
			v += strtod(strchr(p, ' ') + 1, NULL);
	}
	return (v);
}

static void
test_render_while_recording(void **state)
{
	pthread_t	 th[NBUSY];
	void		*ret;
	char		*before, *text, s[128];
	double		 last = 0, v, conns0, resets0, done = 0;
	int		 t, i;

	(void)state;
	before = render();
	conns0 = value(before, "fanoutd_connections_active");
	resets0 = value(before, "fanoutd_h2_streams_reset_total");
	free(before);
	atomic_store(&busy_stop, 0);
	for (t = 0; t < NBUSY; t++)
		atomic_store(&busy_rounds[t], 0);
	for (t = 0; t < NBUSY; t++)
		assert_int_equal(pthread_create(&th[t], NULL, busy,
		    (void *)(intptr_t)t), 0);
	/* Renders from the first rounds on, until every thread did many. */
	for (i = 0; i < NRENDERS || atomic_load(&busy_rounds[0]) < NROUNDS_MIN ||
	    atomic_load(&busy_rounds[1]) < NROUNDS_MIN ||
	    atomic_load(&busy_rounds[2]) < NROUNDS_MIN; i++) {
		/* Each slot only grows, so a total never goes back. */
		text = render();
		v = total(text, "fanoutd_requests_total{route=\"cr_");
		assert_true(v >= last);
		last = v;
		assert_true(value(text, "fanoutd_h2_streams_reset_total") >=
		    resets0);
		free(text);
	}
	atomic_store(&busy_stop, 1);
	for (t = 0; t < NBUSY; t++) {
		assert_int_equal(pthread_join(th[t], &ret), 0);
		done += (double)(intptr_t)ret;
	}
	text = render();
	assert_true(total(text, "fanoutd_requests_total{route=\"cr_") == done);
	assert_true(total(text, "fanoutd_upstream_requests_total{"
	    "upstream=\"cr_") == done);
	assert_true(total(text, "fanoutd_request_duration_seconds_count{"
	    "route=\"cr_") == done);
	assert_true(total(text, "fanoutd_request_duration_seconds_bucket{"
	    "route=\"cr_") > done);
	assert_true(value(text, "fanoutd_connections_active") - conns0 == done);
	assert_true(value(text, "fanoutd_h2_streams_reset_total") - resets0 ==
	    done);
	for (t = 0; t < NBUSY_ROUTES; t++) {
		snprintf(s, sizeof s, "fanoutd_requests_total{route=\"cr_%d\","
		    "code=\"200\"}", t);
		assert_true(value0(text, s) > 0);
	}
	free(text);
	print_message("%d renders while %d threads recorded %.0f rounds\n",
	    i, NBUSY, done);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),	/* first: a fresh process */
		cmocka_unit_test(test_threads_add_up),
		cmocka_unit_test(test_order_of_first_use),
		cmocka_unit_test(test_render_while_recording),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
