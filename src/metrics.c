/*
 * metrics.c: counters, gauges, labelled series and histograms.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "util.h"

/* Seconds; the last bucket is +Inf. */
static const double duration_buckets[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define NDURATION	(sizeof duration_buckets / sizeof duration_buckets[0])
static const double cancel_buckets[] = {
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.1
};
#define NCANCEL		(sizeof cancel_buckets / sizeof cancel_buckets[0])
#define NBUCKETS_MAX	16

struct series {
	struct series	*next;
	char		*labels;	/* route="x",code="200" */
	uint64_t	 value;		/* counters */
	uint64_t	 buckets[NBUCKETS_MAX];	/* histograms: not cumulative */
	uint64_t	 count;
	double		 sum;
};

struct family {
	const char	*name;
	const char	*help;
	const char	*type;
	const double	*bounds;	/* histograms */
	size_t		 nbounds;
	struct series	*head;		/* in order of first use */
	struct series	**tail;
	int		 micro;		/* counts microseconds, shown in s */
};

static struct family	f_requests = { "fanoutd_requests_total",
	"Requests answered, by route and status code (499: client closed).",
	"counter", NULL, 0, NULL, NULL, 0 };
static struct family	f_duration = { "fanoutd_request_duration_seconds",
	"Time from the first byte of a request to its answer, by route.",
	"histogram", duration_buckets, NDURATION, NULL, NULL, 0 };
static struct family	f_upstream = { "fanoutd_upstream_requests_total",
	"Upstream requests (legs) ended, by upstream and outcome.",
	"counter", NULL, 0, NULL, NULL, 0 };
static struct family	f_cancels = { "fanoutd_cancellations_total",
	"Cancellations that stopped in-flight upstream work, by reason.",
	"counter", NULL, 0, NULL, NULL, 0 };
static struct family	f_cancel_latency = { "fanoutd_cancel_latency_seconds",
	"Time from a cancel cell's flip until every transfer of it is released.",
	"histogram", cancel_buckets, NCANCEL, NULL, NULL, 0 };
static struct family	f_grpc = { "fanoutd_grpc_requests_total",
	"gRPC calls answered, by route and grpc-status (1: client cancelled).",
	"counter", NULL, 0, NULL, NULL, 0 };
static struct family	f_reloads = { "fanoutd_config_reloads_total",
	"Configuration reloads, by result.",
	"counter", NULL, 0, NULL, NULL, 0 };

static struct family	f_extra = { "fanoutd_extra_attempts_total",
	"Extra attempts (hedges after a request's first leg, retries), by "
	"route, kind and outcome.", "counter", NULL, 0, NULL, NULL, 0 };
static struct family	f_wasted_s = { "fanoutd_upstream_wasted_seconds_total",
	"Time upstream legs ran before they were cancelled, by upstream and "
	"cancel reason.", "counter", NULL, 0, NULL, NULL, 1 };
static struct family	f_wasted_b = { "fanoutd_upstream_wasted_bytes_total",
	"Response bytes received from upstream legs, then discarded by their "
	"cancellation, by upstream and cancel reason.", "counter", NULL, 0,
	NULL, NULL, 0 };

static struct family *const families[] = {
	&f_requests, &f_duration, &f_upstream, &f_cancels, &f_cancel_latency,
	&f_grpc, &f_reloads, &f_extra, &f_wasted_s, &f_wasted_b,
};

static pthread_mutex_t	lock = PTHREAD_MUTEX_INITIALIZER;
static struct series	*series_get(struct family *, const char *);
static _Atomic int64_t	gauges[G_NGAUGES];
static _Atomic uint64_t	counters[C_NCOUNTERS];

static const struct {
	const char	*name;
	const char	*help;
} gauge_info[G_NGAUGES] = {
	[G_CONNECTIONS_ACTIVE] = { "fanoutd_connections_active",
	    "Client connections open." },
	[G_REQUESTS_IN_FLIGHT] = { "fanoutd_requests_in_flight",
	    "Requests read and not yet answered." },
	[G_TRANSFERS_IN_FLIGHT] = { "fanoutd_upstream_transfers_in_flight",
	    "Upstream transfers started and not yet released." },
	[G_TRANSFERS_PAUSED] = { "fanoutd_upstream_transfers_paused",
	    "Upstream transfers held back until their client reads more." },
}, counter_info[C_NCOUNTERS] = {
	[C_CONNECTIONS_TOTAL] = { "fanoutd_connections_total",
	    "Client connections accepted." },
	[C_UPSTREAM_BYTES_DISCARDED] = { "fanoutd_upstream_bytes_discarded_total",
	    "Bytes of upstream responses thrown away by cancellations." },
	[C_HEDGES_SENT] = { "fanoutd_hedges_sent_total",
	    "Hedged upstream requests sent (mode hedge, beyond the first)." },
	[C_HEDGES_WON] = { "fanoutd_hedges_won_total",
	    "Hedged upstream requests whose answer was the one returned." },
	[C_H2_STREAMS_RESET] = { "fanoutd_h2_streams_reset_total",
	    "HTTP/2 RST_STREAM frames received from clients." },
};

#define LABELLED_MAX	3
static const struct {
	const char	*name;
	const char	*help;
	const char	*label;
	const char	*values[LABELLED_MAX + 1];
} labelled_info[L_NLABELLED] = {
	[L_REQUESTS_PROTO] = { "fanoutd_requests_by_proto_total",
	    "Requests answered, by protocol version.", "proto",
	    { "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", NULL } },
	[L_CONNECTIONS_PROTO] = { "fanoutd_connections_by_proto_total",
	    "Client connections, by the protocol they came to speak.", "proto",
	    { "http/1.1", "h2", NULL } },
	[L_TLS_HANDSHAKES] = { "fanoutd_tls_handshakes_total",
	    "TLS handshakes with clients, by result.", "result",
	    { "ok", "error", NULL } },
	[L_H2_FLOODS] = { "fanoutd_h2_floods_total",
	    "HTTP/2 connections closed for a flood, by kind.", "kind",
	    { "rapid_reset", "continuation", NULL } },
};
static _Atomic uint64_t	labelled[L_NLABELLED][LABELLED_MAX];

void
metrics_init(void)
{
	size_t	i;

	for (i = 0; i < sizeof families / sizeof families[0]; i++) {
		if (families[i]->tail == NULL)
			families[i]->tail = &families[i]->head;
	}
	/* Every reason is shown from the start, so rates work at once. */
	for (i = CANCEL_NONE + 1; i < CANCEL_NREASONS; i++)
		metrics_cancellation((enum cancel_reason)i, UINT64_MAX);
	pthread_mutex_lock(&lock);
	series_get(&f_cancel_latency, "");
	pthread_mutex_unlock(&lock);
	metrics_config_reload(-1);
}

void
metrics_gauge_add(enum metric_gauge g, int64_t d)
{
	atomic_fetch_add_explicit(&gauges[g], d, memory_order_relaxed);
}

int64_t
metrics_gauge_get(enum metric_gauge g)
{
	return (atomic_load_explicit(&gauges[g], memory_order_relaxed));
}

void
metrics_counter_add(enum metric_counter c, uint64_t d)
{
	atomic_fetch_add_explicit(&counters[c], d, memory_order_relaxed);
}

void
metrics_labelled_add(enum metric_labelled l, unsigned v, uint64_t d)
{
	if (v < LABELLED_MAX)
		atomic_fetch_add_explicit(&labelled[l][v], d,
		    memory_order_relaxed);
}

void
metrics_request_proto(int version)
{
	if (version >= 0 && version <= 2)
		metrics_labelled_add(L_REQUESTS_PROTO, (unsigned)version, 1);
}

/* The series with these labels, made on first use. Called locked. */
static struct series *
series_get(struct family *f, const char *labels)
{
	struct series	*s;

	if (f->tail == NULL)
		f->tail = &f->head;
	for (s = f->head; s != NULL; s = s->next) {
		if (strcmp(s->labels, labels) == 0)
			return (s);
	}
	if ((s = calloc(1, sizeof *s)) == NULL)
		return (NULL);
	if ((s->labels = strdup(labels)) == NULL) {
		free(s);
		return (NULL);
	}
	*f->tail = s;
	f->tail = &s->next;
	return (s);
}

static void
series_observe(struct family *f, const char *labels, double v)
{
	struct series	*s;
	size_t		 i;

	pthread_mutex_lock(&lock);
	if ((s = series_get(f, labels)) != NULL) {
		for (i = 0; i < f->nbounds && v > f->bounds[i]; i++)
			;
		s->buckets[i]++;
		s->count++;
		s->sum += v;
	}
	pthread_mutex_unlock(&lock);
}

static void
series_add_locked(struct family *f, const char *labels, uint64_t d)
{
	struct series	*s;

	if ((s = series_get(f, labels)) != NULL)
		s->value += d;
}

static void
series_inc(struct family *f, const char *labels, uint64_t d)
{
	pthread_mutex_lock(&lock);
	series_add_locked(f, labels, d);
	pthread_mutex_unlock(&lock);
}

/* name="value" with the value escaped as the text format asks. */
static size_t
label(char *buf, size_t len, const char *name, const char *value)
{
	size_t	n = strlen(name);

	if (n + 5 > len)
		return (0);
	memcpy(buf, name, n);
	buf[n++] = '=';
	buf[n++] = '"';
	for (; *value != '\0' && n + 3 < len; value++) {
		if (*value == '\\' || *value == '"' || *value == '\n') {
			buf[n++] = '\\';
			buf[n++] = *value == '\n' ? 'n' : *value;
		} else
			buf[n++] = *value;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	return (n);
}

/* name1="v1",name2="v2",... into buf: n pairs, names and values in turn. */
static void
label_list(char *buf, size_t len, size_t n, const char *const *kv)
{
	size_t	i, k = 0;

	buf[0] = '\0';
	for (i = 0; i < n && k + 1 < len; i++) {
		if (i > 0)
			buf[k++] = ',';
		k += label(buf + k, len - k, kv[2 * i], kv[2 * i + 1]);
		buf[k] = '\0';
	}
}

/*
 * route="R",KEY="N" into l: room is kept after the route for the second
 * label (N up to 20 digits). len must exceed 32 and KEY's length.
 */
static void
route_num_label(char *l, size_t len, const char *route, const char *key,
    int v)
{
	size_t	n, klen = strlen(key);

	n = label(l, len - 32 - klen, "route", route ? route : "");
	l[n++] = ',';
	memcpy(l + n, key, klen);
	n += klen;
	memcpy(l + n, "=\"", 2);
	n += 2;
	n += fmt_u64(l + n, v < 0 ? 0 : (uint64_t)v);
	l[n++] = '"';
	l[n] = '\0';
}

void
metrics_request_done(const char *route, int code, uint64_t duration_us)
{
	char	l[512];

	route_num_label(l, sizeof l, route, "code", code);
	series_inc(&f_requests, l, 1);
	label(l, sizeof l, "route", route ? route : "");
	series_observe(&f_duration, l, duration_us / 1e6);
}

void
metrics_grpc_request(const char *route, int grpc_status)
{
	char	l[512];

	route_num_label(l, sizeof l, route, "grpc_status",
	    grpc_status);
	series_inc(&f_grpc, l, 1);
}

void
metrics_upstream_done(const char *upstream, const char *outcome)
{
	const char	*kv[] = { "upstream", upstream, "outcome", outcome };
	char		 l[512];

	label_list(l, sizeof l, 2, kv);
	series_inc(&f_upstream, l, 1);
}

void
metrics_extra_attempt(const char *route, const char *kind,
    const char *outcome, uint64_t n)
{
	const char	*kv[] = {
		"route", route, "kind", kind, "outcome", outcome
	};
	char		 l[512];

	label_list(l, sizeof l, 3, kv);
	series_inc(&f_extra, l, n);
}

void
metrics_wasted(const char *upstream, enum cancel_reason r, uint64_t us,
    uint64_t bytes)
{
	const char	*kv[] = {
		"upstream", upstream, "reason", cancel_reason_name(r)
	};
	char		 l[512];

	label_list(l, sizeof l, 2, kv);
	pthread_mutex_lock(&lock);
	series_add_locked(&f_wasted_s, l, us);
	series_add_locked(&f_wasted_b, l, bytes);
	pthread_mutex_unlock(&lock);
}

void
metrics_cancellation(enum cancel_reason r, uint64_t latency_us)
{
	char	l[64];

	label(l, sizeof l, "reason", cancel_reason_name(r));
	/* UINT64_MAX: make the series exist with a zero. */
	series_inc(&f_cancels, l, latency_us == UINT64_MAX ? 0 : 1);
	if (latency_us != UINT64_MAX)
		series_observe(&f_cancel_latency, "", latency_us / 1e6);
}

void
metrics_config_reload(int ok)
{
	if (ok < 0) {
		series_inc(&f_reloads, "result=\"ok\"", 0);
		series_inc(&f_reloads, "result=\"error\"", 0);
	} else
		series_inc(&f_reloads, ok ? "result=\"ok\"" : "result=\"error\"", 1);
}

static void
render_family(struct evbuffer *out, const struct family *f)
{
	const struct series	*s;
	uint64_t		 cum;
	size_t			 i;
	const char		*sep;

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name,
	    f->help, f->name, f->type);
	for (s = f->head; s != NULL; s = s->next) {
		if (f->bounds == NULL && f->micro) {
			evbuffer_add_printf(out, "%s{%s} %llu.%06llu\n", f->name,
			    s->labels, (unsigned long long)(s->value / 1000000),
			    (unsigned long long)(s->value % 1000000));
			continue;
		}
		if (f->bounds == NULL) {
			evbuffer_add_printf(out, "%s{%s} %llu\n", f->name,
			    s->labels, (unsigned long long)s->value);
			continue;
		}
		sep = s->labels[0] != '\0' ? "," : "";
		for (cum = 0, i = 0; i <= f->nbounds; i++) {
			cum += s->buckets[i];
			if (i < f->nbounds)
				evbuffer_add_printf(out,
				    "%s_bucket{%s%sle=\"%g\"} %llu\n", f->name,
				    s->labels, sep, f->bounds[i],
				    (unsigned long long)cum);
			else
				evbuffer_add_printf(out,
				    "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name,
				    s->labels, sep, (unsigned long long)cum);
		}
		if (s->labels[0] != '\0') {
			evbuffer_add_printf(out, "%s_sum{%s} %.9g\n", f->name,
			    s->labels, s->sum);
			evbuffer_add_printf(out, "%s_count{%s} %llu\n", f->name,
			    s->labels, (unsigned long long)s->count);
		} else {
			evbuffer_add_printf(out, "%s_sum %.9g\n", f->name, s->sum);
			evbuffer_add_printf(out, "%s_count %llu\n", f->name,
			    (unsigned long long)s->count);
		}
	}
}

void
metrics_render(struct evbuffer *out)
{
	size_t	i, j;

	for (i = 0; i < G_NGAUGES; i++)
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n",
		    gauge_info[i].name, gauge_info[i].help, gauge_info[i].name,
		    gauge_info[i].name, (long long)metrics_gauge_get(i));
	for (i = 0; i < C_NCOUNTERS; i++)
		evbuffer_add_printf(out,
		    "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
		    counter_info[i].name, counter_info[i].help,
		    counter_info[i].name, counter_info[i].name,
		    (unsigned long long)atomic_load_explicit(&counters[i],
		    memory_order_relaxed));
	for (i = 0; i < L_NLABELLED; i++) {
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n",
		    labelled_info[i].name, labelled_info[i].help,
		    labelled_info[i].name);
		for (j = 0; labelled_info[i].values[j] != NULL; j++)
			evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n",
			    labelled_info[i].name, labelled_info[i].label,
			    labelled_info[i].values[j],
			    (unsigned long long)atomic_load_explicit(
			    &labelled[i][j], memory_order_relaxed));
	}
	pthread_mutex_lock(&lock);
	for (i = 0; i < sizeof families / sizeof families[0]; i++)
		render_family(out, families[i]);
	pthread_mutex_unlock(&lock);
}
