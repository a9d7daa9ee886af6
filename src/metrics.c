/*
 * metrics.c: counters, gauges, labelled series and histograms.
 *
 * Every thread that records a metric has a shard of its own: its gauges
 * (as deltas, which may be negative), its counters and its own table of
 * each labelled family's series. Only that thread writes a shard, so a
 * record is a lookup, a relaxed load and a relaxed store: no lock, no
 * locked instruction, no cache line written by two cores. metrics_render
 * adds the shards up. The list of shards takes a mutex, at a shard's
 * creation (a thread's first record) and at render only.
 *
 * Memory orders (there is no ThreadSanitizer build to check them):
 * - A shard is zeroed, then put on the list under shards_lock; render
 *   walks the list under the same lock, so it sees the zeroed shard.
 * - A value slot (gauge, counter, bucket, sum) is written by its shard's
 *   owner only, with a relaxed load and a relaxed store (single writer:
 *   nothing to lose between them), and read by render with a relaxed
 *   load: never torn, at worst a few events old. Whatever a thread did
 *   before pthread_join() returns, or before a mutex it released, is seen
 *   by render after them.
 * - A series is built in full (key, labels, seq, zeroed slots), then
 *   linked at the tail of its shard's list with a release store; render
 *   loads the links with acquire, so a node it reaches is complete.
 *   Nodes are never unlinked nor freed, so a walk never meets freed
 *   memory. The hash chains (hnext, hash[]) are the owner's alone.
 * - A thread's shard outlives it: a pthread key's destructor marks it
 *   orphaned under shards_lock and the next new thread adopts it (the
 *   mutex orders the old owner's writes before the new one's), so totals
 *   are kept and the number of shards stays that of threads alive at once.
 *   Shards and series stay reachable from the list: nothing to free, and
 *   nothing LeakSanitizer calls a leak.
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
/* The same bounds in microseconds: v > bound compares as the seconds did. */
static const uint64_t duration_buckets_us[NDURATION] = {
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000
};
static const double cancel_buckets[] = {
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.1
};
#define NCANCEL		(sizeof cancel_buckets / sizeof cancel_buckets[0])
static const uint64_t cancel_buckets_us[NCANCEL] = {
	10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000
};
#define NBUCKETS_MAX	16

/* A series' key: up to three strings and a number (code, reason...). */
#define KEY_STR_MAX	3
struct key {
	const char	*s[KEY_STR_MAX];
	uint64_t	 n;
};

/* One series of one family in one shard. */
struct series {
	struct series *_Atomic next;	/* creation order; release/acquire */
	struct series	*hnext;		/* the owner's hash chain */
	uint64_t	 hash;
	uint64_t	 seq;		/* order of creation, process-wide */
	struct key	 key;		/* its strings are copies in the node */
	const char	*labels;	/* route="x",code="200", in the node */
	/* Counters: v[0]. Histograms: nbounds + 1 buckets (not cumulative),
	 * then the sum in microseconds. */
	_Atomic uint64_t v[];
};

enum family_id {
	F_REQUESTS, F_DURATION, F_UPSTREAM, F_CANCELS, F_CANCEL_LATENCY,
	F_GRPC, F_RELOADS, F_EXTRA, F_WASTED_S, F_WASTED_B, F_NFAMILIES
};

struct family {
	const char	*name;
	const char	*help;
	const char	*type;
	const double	*bounds;	/* histograms */
	const uint64_t	*bounds_us;
	size_t		 nbounds;
	int		 micro;		/* counts microseconds, shown in s */
	size_t		 nstr;		/* strings in the key */
	/* The label string of a key. */
	void		(*labels)(char *, size_t, const struct key *);
};

static void	labels_route_code(char *, size_t, const struct key *);
static void	labels_route(char *, size_t, const struct key *);
static void	labels_upstream_outcome(char *, size_t, const struct key *);
static void	labels_reason(char *, size_t, const struct key *);
static void	labels_none(char *, size_t, const struct key *);
static void	labels_route_grpc(char *, size_t, const struct key *);
static void	labels_result(char *, size_t, const struct key *);
static void	labels_extra(char *, size_t, const struct key *);
static void	labels_upstream_reason(char *, size_t, const struct key *);

/* In the order they are rendered. */
static const struct family	families[F_NFAMILIES] = {
	[F_REQUESTS] = { "fanoutd_requests_total",
	    "Requests answered, by route and status code (499: client closed).",
	    "counter", NULL, NULL, 0, 0, 1, labels_route_code },
	[F_DURATION] = { "fanoutd_request_duration_seconds",
	    "Time from the first byte of a request to its answer, by route.",
	    "histogram", duration_buckets, duration_buckets_us, NDURATION, 0,
	    1, labels_route },
	[F_UPSTREAM] = { "fanoutd_upstream_requests_total",
	    "Upstream requests (legs) ended, by upstream and outcome.",
	    "counter", NULL, NULL, 0, 0, 2, labels_upstream_outcome },
	[F_CANCELS] = { "fanoutd_cancellations_total",
	    "Cancellations that stopped in-flight upstream work, by reason.",
	    "counter", NULL, NULL, 0, 0, 0, labels_reason },
	[F_CANCEL_LATENCY] = { "fanoutd_cancel_latency_seconds",
	    "Time from a cancel cell's flip until every transfer of it is "
	    "released.", "histogram", cancel_buckets, cancel_buckets_us,
	    NCANCEL, 0, 0, labels_none },
	[F_GRPC] = { "fanoutd_grpc_requests_total",
	    "gRPC calls answered, by route and grpc-status (1: client "
	    "cancelled).", "counter", NULL, NULL, 0, 0, 1, labels_route_grpc },
	[F_RELOADS] = { "fanoutd_config_reloads_total",
	    "Configuration reloads, by result.",
	    "counter", NULL, NULL, 0, 0, 0, labels_result },
	[F_EXTRA] = { "fanoutd_extra_attempts_total",
	    "Extra attempts (hedges after a request's first leg, retries), by "
	    "route, kind and outcome.", "counter", NULL, NULL, 0, 0, 3,
	    labels_extra },
	[F_WASTED_S] = { "fanoutd_upstream_wasted_seconds_total",
	    "Time upstream legs ran before they were cancelled, by upstream "
	    "and cancel reason.", "counter", NULL, NULL, 0, 1, 1,
	    labels_upstream_reason },
	[F_WASTED_B] = { "fanoutd_upstream_wasted_bytes_total",
	    "Response bytes received from upstream legs, then discarded by "
	    "their cancellation, by upstream and cancel reason.", "counter",
	    NULL, NULL, 0, 0, 1, labels_upstream_reason },
};

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

/* One family's series in one shard. */
struct table {
	struct series *_Atomic head;	/* creation order; render walks it */
	struct series	*tail;		/* the owner's */
	struct series	**hash;		/* the owner's: chains by key hash */
	struct series	*last;		/* the owner's: the last one found */
	size_t		 mask;		/* buckets - 1 */
	size_t		 n;
};

/* What one thread recorded. Written by that thread only. */
struct shard {
	_Atomic int64_t	 gauges[G_NGAUGES];	/* deltas */
	_Atomic uint64_t counters[C_NCOUNTERS];
	_Atomic uint64_t labelled[L_NLABELLED][LABELLED_MAX];
	struct table	 tables[F_NFAMILIES];
	struct shard	*next;		/* under shards_lock */
	int		 orphan;	/* under shards_lock: its thread ended */
} __attribute__((aligned(64)));

static pthread_mutex_t	 shards_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shard	*shards;	/* under shards_lock */
static pthread_once_t	 shard_once = PTHREAD_ONCE_INIT;
static pthread_key_t	 shard_key;
static int		 shard_key_ok;
static __thread struct shard *my_shard;
/* Creation order of series across shards: render shows them in it. */
static _Atomic uint64_t	 series_seq;

/* A thread ends: its shard waits, totals and all, for the next thread. */
static void
shard_release(void *p)
{
	struct shard	*sh = p;

	pthread_mutex_lock(&shards_lock);
	sh->orphan = 1;
	pthread_mutex_unlock(&shards_lock);
	my_shard = NULL;
}

static void
shard_key_init(void)
{
	shard_key_ok = pthread_key_create(&shard_key, shard_release) == 0;
}

static struct shard *
shard_new(void)
{
	struct shard	*sh;

	pthread_once(&shard_once, shard_key_init);
	pthread_mutex_lock(&shards_lock);
	for (sh = shards; sh != NULL && !sh->orphan; sh = sh->next)
		;
	if (sh != NULL)
		sh->orphan = 0;
	else if ((sh = aligned_alloc(64, sizeof *sh)) != NULL) {
		memset(sh, 0, sizeof *sh);
		sh->next = shards;
		shards = sh;
	}
	pthread_mutex_unlock(&shards_lock);
	if (sh != NULL && shard_key_ok)
		(void)pthread_setspecific(shard_key, sh);
	return (my_shard = sh);
}

static inline struct shard *
shard_get(void)
{
	struct shard	*sh = my_shard;

	if (__builtin_expect(sh == NULL, 0))
		sh = shard_new();
	return (sh);
}

/* Add to a slot only this thread writes: no locked read-modify-write. */
static inline void
slot_add(_Atomic uint64_t *p, uint64_t d)
{
	atomic_store_explicit(p, atomic_load_explicit(p,
	    memory_order_relaxed) + d, memory_order_relaxed);
}

static inline void
gauge_slot_add(_Atomic int64_t *p, int64_t d)
{
	atomic_store_explicit(p, (int64_t)((uint64_t)atomic_load_explicit(p,
	    memory_order_relaxed) + (uint64_t)d), memory_order_relaxed);
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

static void
labels_route_code(char *l, size_t len, const struct key *k)
{
	route_num_label(l, len, k->s[0], "code", (int)(int64_t)k->n);
}

static void
labels_route_grpc(char *l, size_t len, const struct key *k)
{
	route_num_label(l, len, k->s[0], "grpc_status", (int)(int64_t)k->n);
}

static void
labels_route(char *l, size_t len, const struct key *k)
{
	label(l, len, "route", k->s[0]);
}

static void
labels_upstream_outcome(char *l, size_t len, const struct key *k)
{
	const char	*kv[] = { "upstream", k->s[0], "outcome", k->s[1] };

	label_list(l, len, 2, kv);
}

static void
labels_extra(char *l, size_t len, const struct key *k)
{
	const char	*kv[] = {
		"route", k->s[0], "kind", k->s[1], "outcome", k->s[2]
	};

	label_list(l, len, 3, kv);
}

static void
labels_upstream_reason(char *l, size_t len, const struct key *k)
{
	const char	*kv[] = {
		"upstream", k->s[0], "reason",
		cancel_reason_name((enum cancel_reason)k->n)
	};

	label_list(l, len, 2, kv);
}

static void
labels_reason(char *l, size_t len, const struct key *k)
{
	label(l, len, "reason", cancel_reason_name((enum cancel_reason)k->n));
}

static void
labels_result(char *l, size_t len, const struct key *k)
{
	snprintf(l, len, "result=\"%s\"", k->n ? "ok" : "error");
}

static void
labels_none(char *l, size_t len, const struct key *k)
{
	(void)len;
	(void)k;
	l[0] = '\0';
}

/* FNV-1a over the key's strings (each with its NUL) and its number. */
static inline uint64_t
key_hash(const struct family *f, const struct key *k)
{
	uint64_t		 h = 0xcbf29ce484222325ULL;
	const unsigned char	*p;
	size_t			 i;

	for (i = 0; i < f->nstr; i++) {
		for (p = (const unsigned char *)k->s[i]; *p != '\0'; p++)
			h = (h ^ *p) * 0x100000001b3ULL;
		h *= 0x100000001b3ULL;
	}
	h ^= k->n;
	h *= 0x9e3779b97f4a7c15ULL;
	return (h ^ (h >> 29));
}

/* Names are a few bytes long: cheaper inline than a call to strcmp. */
static inline int
str_equal(const char *a, const char *b)
{
	for (; *a == *b; a++, b++) {
		if (*a == '\0')
			return (1);
	}
	return (0);
}

static inline int
key_equal(const struct family *f, const struct key *a, const struct key *b)
{
	size_t	i;

	if (a->n != b->n)
		return (0);
	for (i = 0; i < f->nstr; i++) {
		if (!str_equal(a->s[i], b->s[i]))
			return (0);
	}
	return (1);
}

static size_t
family_nslots(const struct family *f)
{
	return (f->bounds != NULL ? f->nbounds + 2 : 1);
}

/* The owner's hash, twice as many buckets. */
static int
table_grow(struct table *t)
{
	struct series	**h, *s, *next;
	size_t		 nb = t->hash == NULL ? 16 : 2 * (t->mask + 1), i;

	if ((h = calloc(nb, sizeof *h)) == NULL)
		return (-1);
	if (t->hash != NULL) {
		for (i = 0; i <= t->mask; i++) {
			for (s = t->hash[i]; s != NULL; s = next) {
				next = s->hnext;
				s->hnext = h[s->hash & (nb - 1)];
				h[s->hash & (nb - 1)] = s;
			}
		}
		free(t->hash);
	}
	t->hash = h;
	t->mask = nb - 1;
	return (0);
}

/* A new series of this shard: built in full, then published. */
static struct series *
series_new(struct table *t, const struct family *f, const struct key *k,
    uint64_t h)
{
	struct series	*s;
	char		 l[512], *p;
	size_t		 lens[KEY_STR_MAX], llen, size, i;

	if ((t->hash == NULL || t->n >= t->mask + 1) && table_grow(t) == -1 &&
	    t->hash == NULL)
		return (NULL);
	f->labels(l, sizeof l, k);
	llen = strlen(l) + 1;
	size = sizeof *s + family_nslots(f) * sizeof s->v[0] + llen;
	for (i = 0; i < f->nstr; i++)
		size += (lens[i] = strlen(k->s[i]) + 1);
	if ((s = calloc(1, size)) == NULL)
		return (NULL);
	p = (char *)&s->v[family_nslots(f)];
	memcpy(p, l, llen);
	s->labels = p;
	p += llen;
	for (i = 0; i < f->nstr; i++) {
		memcpy(p, k->s[i], lens[i]);
		s->key.s[i] = p;
		p += lens[i];
	}
	s->key.n = k->n;
	s->hash = h;
	s->seq = atomic_fetch_add_explicit(&series_seq, 1,
	    memory_order_relaxed);
	s->hnext = t->hash[h & t->mask];
	t->hash[h & t->mask] = s;
	t->n++;
	/* Release: a render that loads this link sees the node built. */
	if (t->tail != NULL)
		atomic_store_explicit(&t->tail->next, s, memory_order_release);
	else
		atomic_store_explicit(&t->head, s, memory_order_release);
	t->tail = s;
	return (s);
}

/* This thread's series of family fid with key k, made on first use; the
 * label string is only formatted then. Inlined where fid is a constant,
 * so the loops over the key's strings unroll. */
static inline __attribute__((always_inline)) struct series *
series_get(enum family_id fid, struct key *k)
{
	const struct family	*f = &families[fid];
	struct shard		*sh;
	struct table		*t;
	struct series		*s;
	uint64_t		 h;
	size_t			 i;

	if ((sh = shard_get()) == NULL)
		return (NULL);
	for (i = 0; i < f->nstr; i++) {
		if (k->s[i] == NULL)
			k->s[i] = "";
	}
	t = &sh->tables[fid];
	/* A thread often records the same series again (one route, one
	 * upstream, code 200): then a comparison is all it takes. */
	if (t->last != NULL && key_equal(f, &t->last->key, k))
		return (t->last);
	h = key_hash(f, k);
	if (t->hash != NULL) {
		for (s = t->hash[h & t->mask]; s != NULL; s = s->hnext) {
			if (s->hash == h && key_equal(f, &s->key, k))
				return (t->last = s);
		}
	}
	if ((s = series_new(t, f, k, h)) != NULL)
		t->last = s;
	return (s);
}

static inline __attribute__((always_inline)) void
series_add(enum family_id fid, struct key *k, uint64_t d)
{
	struct series	*s;

	if ((s = series_get(fid, k)) != NULL)
		slot_add(&s->v[0], d);
}

static inline __attribute__((always_inline)) void
series_observe(enum family_id fid, struct key *k, uint64_t us)
{
	const struct family	*f = &families[fid];
	struct series		*s;
	size_t			 i;

	if ((s = series_get(fid, k)) == NULL)
		return;
	for (i = 0; i < f->nbounds && us > f->bounds_us[i]; i++)
		;
	slot_add(&s->v[i], 1);
	slot_add(&s->v[f->nbounds + 1], us);
}

void
metrics_init(void)
{
	struct key	k = { { NULL }, 0 };
	size_t		i;

	/* Every reason is shown from the start, so rates work at once. */
	for (i = CANCEL_NONE + 1; i < CANCEL_NREASONS; i++)
		metrics_cancellation((enum cancel_reason)i, UINT64_MAX);
	(void)series_get(F_CANCEL_LATENCY, &k);
	metrics_config_reload(-1);
}

void
metrics_gauge_add(enum metric_gauge g, int64_t d)
{
	struct shard	*sh;

	if ((sh = shard_get()) != NULL)
		gauge_slot_add(&sh->gauges[g], d);
}

static int64_t
gauge_sum_locked(enum metric_gauge g)
{
	const struct shard	*sh;
	uint64_t		 v = 0;

	for (sh = shards; sh != NULL; sh = sh->next)
		v += (uint64_t)atomic_load_explicit(&sh->gauges[g],
		    memory_order_relaxed);
	return ((int64_t)v);
}

int64_t
metrics_gauge_get(enum metric_gauge g)
{
	int64_t	v;

	pthread_mutex_lock(&shards_lock);
	v = gauge_sum_locked(g);
	pthread_mutex_unlock(&shards_lock);
	return (v);
}

void
metrics_counter_add(enum metric_counter c, uint64_t d)
{
	struct shard	*sh;

	if ((sh = shard_get()) != NULL)
		slot_add(&sh->counters[c], d);
}

void
metrics_labelled_add(enum metric_labelled l, unsigned v, uint64_t d)
{
	struct shard	*sh;

	if (v < LABELLED_MAX && (sh = shard_get()) != NULL)
		slot_add(&sh->labelled[l][v], d);
}

void
metrics_request_proto(int version)
{
	if (version >= 0 && version <= 2)
		metrics_labelled_add(L_REQUESTS_PROTO, (unsigned)version, 1);
}

void
metrics_request_done(const char *route, int code, uint64_t duration_us)
{
	struct key	k = { { route }, (uint64_t)(int64_t)code };

	series_add(F_REQUESTS, &k, 1);
	k.n = 0;
	series_observe(F_DURATION, &k, duration_us);
}

void
metrics_grpc_request(const char *route, int grpc_status)
{
	struct key	k = { { route }, (uint64_t)(int64_t)grpc_status };

	series_add(F_GRPC, &k, 1);
}

void
metrics_upstream_done(const char *upstream, const char *outcome)
{
	struct key	k = { { upstream, outcome }, 0 };

	series_add(F_UPSTREAM, &k, 1);
}

void
metrics_extra_attempt(const char *route, const char *kind,
    const char *outcome, uint64_t n)
{
	struct key	k = { { route, kind, outcome }, 0 };

	series_add(F_EXTRA, &k, n);
}

void
metrics_wasted(const char *upstream, enum cancel_reason r, uint64_t us,
    uint64_t bytes)
{
	struct key	k = { { upstream }, (uint64_t)r };

	series_add(F_WASTED_S, &k, us);
	series_add(F_WASTED_B, &k, bytes);
}

void
metrics_cancellation(enum cancel_reason r, uint64_t latency_us)
{
	struct key	k = { { NULL }, (uint64_t)r };

	/* UINT64_MAX: make the series exist with a zero. */
	series_add(F_CANCELS, &k, latency_us == UINT64_MAX ? 0 : 1);
	if (latency_us != UINT64_MAX) {
		k.n = 0;
		series_observe(F_CANCEL_LATENCY, &k, latency_us);
	}
}

void
metrics_config_reload(int ok)
{
	struct key	k = { { NULL }, 0 };

	if (ok < 0) {
		k.n = 1;
		series_add(F_RELOADS, &k, 0);
		k.n = 0;
		series_add(F_RELOADS, &k, 0);
	} else {
		k.n = ok != 0;
		series_add(F_RELOADS, &k, 1);
	}
}

/* ---- render ---------------------------------------------------------- */

/* One series of a family, summed over the shards. */
struct row {
	const char	*labels;
	uint64_t	 seq;		/* the earliest of its shards' */
	uint64_t	 v[NBUCKETS_MAX + 2];
};

static int
cmp_series_labels(const void *a, const void *b)
{
	const struct series	*x = *(const struct series *const *)a;
	const struct series	*y = *(const struct series *const *)b;
	int			 c;

	if ((c = strcmp(x->labels, y->labels)) != 0)
		return (c);
	return (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static int
cmp_row_seq(const void *a, const void *b)
{
	const struct row	*x = a, *y = b;

	return (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/*
 * The family's series over every shard, one row per label string, in the
 * order the process first made them (each row's smallest seq). *nrows is
 * set; NULL with 0 rows when there are none or memory ran out.
 */
static struct row *
family_rows_locked(enum family_id fid, size_t *nrows)
{
	const struct family	*f = &families[fid];
	const struct shard	*sh;
	struct series		*s, **all = NULL, **grown;
	struct row		*rows = NULL, *r = NULL;
	size_t			 n = 0, cap = 0, i, j, ns = family_nslots(f);

	*nrows = 0;
	for (sh = shards; sh != NULL; sh = sh->next) {
		for (s = atomic_load_explicit(&sh->tables[fid].head,
		    memory_order_acquire); s != NULL;
		    s = atomic_load_explicit(&s->next, memory_order_acquire)) {
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				if ((grown = realloc(all,
				    cap * sizeof *all)) == NULL)
					goto out;
				all = grown;
			}
			all[n++] = s;
		}
	}
	if (n == 0 || (rows = calloc(n, sizeof *rows)) == NULL)
		goto out;
	qsort(all, n, sizeof *all, cmp_series_labels);
	for (i = 0; i < n; i++) {
		if (i == 0 || strcmp(all[i]->labels, all[i - 1]->labels) != 0) {
			r = &rows[(*nrows)++];
			r->labels = all[i]->labels;
			r->seq = all[i]->seq;	/* the first is the smallest */
		}
		for (j = 0; j < ns; j++)
			r->v[j] += atomic_load_explicit(&all[i]->v[j],
			    memory_order_relaxed);
	}
	qsort(rows, *nrows, sizeof *rows, cmp_row_seq);
out:
	free(all);
	return (rows);
}

static void
render_family_locked(struct evbuffer *out, enum family_id fid)
{
	const struct family	*f = &families[fid];
	const struct row	*s;
	struct row		*rows;
	uint64_t		 cum, sum;
	size_t			 i, k, nrows;
	char			 le[32];
	int			 labelled;

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name,
	    f->help, f->name, f->type);
	rows = family_rows_locked(fid, &nrows);
	for (k = 0; k < nrows; k++) {
		s = &rows[k];
		if (f->bounds == NULL && f->micro) {
			evbuffer_add_printf(out, "%s{%s} %llu.%06llu\n", f->name,
			    s->labels, (unsigned long long)(s->v[0] / 1000000),
			    (unsigned long long)(s->v[0] % 1000000));
			continue;
		}
		if (f->bounds == NULL) {
			evbuffer_add_printf(out, "%s{%s} %llu\n", f->name,
			    s->labels, (unsigned long long)s->v[0]);
			continue;
		}
		/* _count is the +Inf bucket: the two always agree. An
		 * unlabelled series has no braces on _sum and _count. */
		labelled = s->labels[0] != '\0';
		for (cum = 0, i = 0; i <= f->nbounds; i++) {
			cum += s->v[i];
			if (i < f->nbounds)
				snprintf(le, sizeof le, "%g", f->bounds[i]);
			else
				snprintf(le, sizeof le, "+Inf");
			evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n",
			    f->name, s->labels, labelled ? "," : "", le,
			    (unsigned long long)cum);
		}
		sum = s->v[f->nbounds + 1];
		evbuffer_add_printf(out, "%s_sum%s%s%s %.9g\n%s_count%s%s%s %llu\n",
		    f->name, labelled ? "{" : "", s->labels, labelled ? "}" : "",
		    sum / 1e6, f->name, labelled ? "{" : "", s->labels,
		    labelled ? "}" : "", (unsigned long long)cum);
	}
	free(rows);
}

void
metrics_render(struct evbuffer *out)
{
	const struct shard	*sh;
	uint64_t		 v;
	size_t			 i, j;

	pthread_mutex_lock(&shards_lock);
	for (i = 0; i < G_NGAUGES; i++)
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n",
		    gauge_info[i].name, gauge_info[i].help, gauge_info[i].name,
		    gauge_info[i].name, (long long)gauge_sum_locked(i));
	for (i = 0; i < C_NCOUNTERS; i++) {
		for (v = 0, sh = shards; sh != NULL; sh = sh->next)
			v += atomic_load_explicit(&sh->counters[i],
			    memory_order_relaxed);
		evbuffer_add_printf(out,
		    "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
		    counter_info[i].name, counter_info[i].help,
		    counter_info[i].name, counter_info[i].name,
		    (unsigned long long)v);
	}
	for (i = 0; i < L_NLABELLED; i++) {
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n",
		    labelled_info[i].name, labelled_info[i].help,
		    labelled_info[i].name);
		for (j = 0; labelled_info[i].values[j] != NULL; j++) {
			for (v = 0, sh = shards; sh != NULL; sh = sh->next)
				v += atomic_load_explicit(&sh->labelled[i][j],
				    memory_order_relaxed);
			evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n",
			    labelled_info[i].name, labelled_info[i].label,
			    labelled_info[i].values[j], (unsigned long long)v);
		}
	}
	for (i = 0; i < F_NFAMILIES; i++)
		render_family_locked(out, (enum family_id)i);
	pthread_mutex_unlock(&shards_lock);
}
