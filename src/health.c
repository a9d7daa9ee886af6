/*
 * health.c: servers, passive and active health (see health.h).
 *
 * The hot path (health_pick, health_leg_end on a success) reads a few
 * atomics of the server and writes its in-flight count; the clock is read
 * only for a server that has been ejected. Ejections take one process-wide
 * lock, since max_ejected is a property of all an upstream's servers
 * together; they are rare by nature.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "upstream.h"
#include "util.h"

#define ATOMIC_LOAD(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define ATOMIC_STORE(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELAXED)

static pthread_mutex_t	eject_lock = PTHREAD_MUTEX_INITIALIZER;

static int
server_available(const struct server_state *st, uint64_t *now)
{
	uint64_t	until;

	if (ATOMIC_LOAD(&st->checked_down))
		return (0);
	if ((until = ATOMIC_LOAD(&st->ejected_until)) == 0)
		return (1);
	if (*now == 0)
		*now = now_ms();
	return (until <= *now);
}

int
health_available(const struct server_conf *sv)
{
	uint64_t	now = 0;

	return (server_available(sv->st, &now));
}

static int
skipped(const struct server_conf *sv, struct server_conf *const *skip,
    size_t nskip)
{
	size_t	i;

	for (i = 0; i < nskip; i++)
		if (skip[i] == sv)
			return (1);
	return (0);
}

/* xorshift64*, one per thread: least_request's two choices. */
static uint64_t
rand64(void)
{
	static __thread uint64_t	x;

	if (x == 0)
		x = now_us() ^ ((uint64_t)(uintptr_t)&x << 16) ^ 0x9e3779b97f4a7c15ULL;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return (x * 0x2545f4914f6cdd1dULL);
}

static struct server_conf *
pick_least_request(const struct upstream_conf *u,
    struct server_conf *const *skip, size_t nskip, uint64_t *now)
{
	struct server_conf	*ok[UPSTREAM_SERVERS_MAX], *a, *b;
	size_t			 i, n = 0, j;

	for (i = 0; i < u->nservers; i++) {
		if (server_available(u->servers[i].st, now) &&
		    !skipped(&u->servers[i], skip, nskip))
			ok[n++] = &u->servers[i];
	}
	if (n == 0)
		return (NULL);
	if (n == 1)
		return (ok[0]);
	/* Two distinct servers at random; the one with fewer legs wins. */
	i = rand64() % n;
	j = rand64() % (n - 1);
	if (j >= i)
		j++;
	a = ok[i];
	b = ok[j];
	return (ATOMIC_LOAD(&b->st->inflight) < ATOMIC_LOAD(&a->st->inflight) ?
	    b : a);
}

struct server_conf *
health_pick(const struct upstream_conf *u, struct server_conf *const *skip,
    size_t nskip)
{
	struct server_conf	*sv = NULL;
	uint64_t		 now = 0;
	size_t			 k, t;

	if (u->nservers == 1) {
		if (server_available(u->servers[0].st, &now) &&
		    !skipped(&u->servers[0], skip, nskip))
			sv = &u->servers[0];
	} else if (u->balance == BALANCE_LEAST_REQUEST)
		sv = pick_least_request(u, skip, nskip, &now);
	else {
		/* The next turn; an unavailable server's turn goes to the
		 * servers after it in the layout. */
		t = __atomic_fetch_add(&((struct upstream_conf *)u)->rr_next, 1,
		    __ATOMIC_RELAXED) % u->nturns;
		for (k = 0; k < u->nturns; k++) {
			sv = &u->servers[u->turns[(t + k) % u->nturns]];
			if (server_available(sv->st, &now) &&
			    !skipped(sv, skip, nskip))
				break;
			sv = NULL;
		}
	}
	if (sv != NULL)
		__atomic_add_fetch(&sv->st->inflight, 1, __ATOMIC_RELAXED);
	return (sv);
}

/* Servers of u out by ejection now. Under eject_lock. */
static unsigned
ejected_now(const struct upstream_conf *u, uint64_t now)
{
	unsigned	n = 0;
	size_t		i;

	for (i = 0; i < u->nservers; i++)
		if (ATOMIC_LOAD(&u->servers[i].st->ejected_until) > now)
			n++;
	return (n);
}

static void
server_failed(const struct upstream_conf *u, struct server_conf *sv)
{
	struct server_state	*st = sv->st;
	uint64_t		 now, ms;
	unsigned		 fails, i;

	if (u->eject_after == 0)
		return;
	now = now_ms();
	/* A leg sent before the ejection: it is out already, and the run of
	 * failures starts again from nothing when it is back. */
	if (ATOMIC_LOAD(&st->ejected_until) > now)
		return;
	fails = __atomic_add_fetch(&st->fails, 1, __ATOMIC_RELAXED);
	if (fails < u->eject_after)
		return;
	pthread_mutex_lock(&eject_lock);
	if (ATOMIC_LOAD(&st->ejected_until) > now) {
		/* Another worker's leg ejected it just now. */
		pthread_mutex_unlock(&eject_lock);
		return;
	}
	if (ejected_now(u, now) >= u->max_ejected) {
		pthread_mutex_unlock(&eject_lock);
		/* Said once a run, not at every failure after it. */
		if (fails == u->eject_after)
			log_warnx("server not ejected upstream=%s server=%s "
			    "failures=%u (max_ejected %u reached)", u->name,
			    sv->url, fails, u->max_ejected);
		return;
	}
	/* Back for eject_time_max without a relapse: forgiven. */
	if (st->back_at != 0 && now - st->back_at >= u->eject_time_max_ms)
		st->streak = 0;
	ms = u->eject_time_ms;
	for (i = 0; i < st->streak && ms < u->eject_time_max_ms; i++)
		ms *= 2;
	if (ms > u->eject_time_max_ms)
		ms = u->eject_time_max_ms;
	st->streak++;
	st->back_at = now + ms;
	ATOMIC_STORE(&st->fails, 0);
	ATOMIC_STORE(&st->ejected_until, now + ms);
	__atomic_add_fetch(&st->ejections, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&eject_lock);
	log_warnx("server ejected upstream=%s server=%s failures=%u "
	    "for_ms=%llu", u->name, sv->url, fails, (unsigned long long)ms);
}

void
health_leg_end(const struct upstream_conf *u, struct server_conf *sv,
    enum health_verdict v)
{
	if (sv == NULL)
		return;
	__atomic_sub_fetch(&sv->st->inflight, 1, __ATOMIC_RELAXED);
	switch (v) {
	case HEALTH_NONE:
		break;
	case HEALTH_PASS:
		if (ATOMIC_LOAD(&sv->st->fails) != 0)
			ATOMIC_STORE(&sv->st->fails, 0);
		break;
	case HEALTH_FAIL:
		server_failed(u, sv);
		break;
	}
}

/* ---- active checks --------------------------------------------------------- */

struct check {
	struct health_checks		*hc;
	const struct upstream_conf	*up;
	struct server_conf		*sv;
	struct event			*timer;
	struct transfer			*xfer;
};

struct health_checks {
	struct upstreams	*ups;
	struct config		*conf;		/* a reference */
	struct check		*checks;
	size_t			 nchecks;
	struct http_headers	 headers;	/* sent with every check */
};

static void	check_start(evutil_socket_t, short, void *);

static void
check_result(struct check *c, int pass, const char *why)
{
	const struct upstream_conf	*u = c->up;
	struct server_state		*st = c->sv->st;
	uint64_t			 now;
	int				 changed = 0, down;

	pthread_mutex_lock(&st->entry.lock);
	down = ATOMIC_LOAD(&st->checked_down);
	if (pass) {
		st->check_fails = 0;
		st->check_passes++;
		if (down && st->check_passes >= u->health_rise) {
			ATOMIC_STORE(&st->checked_down, 0);
			changed = 1;
		}
	} else {
		st->check_passes = 0;
		st->check_fails++;
		if (!down && st->check_fails >= u->health_fall) {
			ATOMIC_STORE(&st->checked_down, 1);
			changed = 1;
		}
	}
	pthread_mutex_unlock(&st->entry.lock);
	if (pass && ATOMIC_LOAD(&st->ejected_until) != 0) {
		/* A server that answers its checks is back (as Envoy has
		 * it): the ejection ends, its failures are forgotten. */
		pthread_mutex_lock(&eject_lock);
		now = now_ms();
		if (ATOMIC_LOAD(&st->ejected_until) > now)
			st->back_at = now;
		ATOMIC_STORE(&st->ejected_until, 0);
		ATOMIC_STORE(&st->fails, 0);
		pthread_mutex_unlock(&eject_lock);
	}
	if (changed && pass)
		log_info("server up upstream=%s server=%s (health check passed "
		    "%u times)", u->name, c->sv->url, u->health_rise);
	else if (changed)
		log_warnx("server down upstream=%s server=%s (health check "
		    "failed %u times: %s)", u->name, c->sv->url,
		    u->health_fall, why);
}

static void
check_done(struct transfer *x, struct transfer_result *res, void *arg)
{
	struct check	*c = arg;
	char		 why[64];

	c->xfer = NULL;
	if (res->error != XFER_OK)
		snprintf(why, sizeof why, "%s", transfer_error_name(res->error));
	else
		snprintf(why, sizeof why, "status %d", res->status);
	check_result(c, res->error == XFER_OK && res->status >= 200 &&
	    res->status < 300, why);
	evtimer_add_ms(c->timer, c->up->health_interval_ms);
}

static void
check_start(evutil_socket_t fd, short what, void *arg)
{
	struct check		*c = arg;
	struct transfer_request	 tr;

	memset(&tr, 0, sizeof tr);
	tr.up = c->up;
	tr.url = c->sv->url;
	tr.method = "GET";
	tr.path = c->up->health_check;
	tr.pathlen = strlen(c->up->health_check);
	tr.headers = &c->hc->headers;
	tr.timeout_ms = c->up->health_timeout_ms;
	if ((c->xfer = transfer_start(c->hc->ups, &tr, check_done, c)) == NULL) {
		check_result(c, 0, "cannot start the check");
		evtimer_add_ms(c->timer, c->up->health_interval_ms);
	}
}

struct health_checks *
health_checks_new(struct event_base *base, struct upstreams *ups,
    struct config *conf, unsigned id, unsigned nworkers)
{
	struct health_checks	*hc;
	struct upstream_conf	*u;
	struct check		*c;
	size_t			 i, j, seq = 0, n = 0;

	/* Room for every checked server; this worker takes its share. */
	for (i = 0; i < conf->nupstreams; i++)
		if (conf->upstreams[i]->health_check != NULL)
			n += conf->upstreams[i]->nservers;
	if (n <= id)
		return (NULL);
	if ((hc = calloc(1, sizeof *hc)) == NULL ||
	    (hc->checks = calloc(n, sizeof *hc->checks)) == NULL)
		goto fail;
	hc->ups = ups;
	hc->conf = config_ref(conf);
	http_headers_init(&hc->headers);
	if (http_headers_add(&hc->headers, "User-Agent", 10,
	    "fanoutd-health-check", 20) == -1)
		goto fail;
	seq = 0;
	for (i = 0; i < conf->nupstreams; i++) {
		u = conf->upstreams[i];
		for (j = 0; u->health_check != NULL && j < u->nservers; j++) {
			if (seq++ % nworkers != id)
				continue;
			c = &hc->checks[hc->nchecks];
			c->hc = hc;
			c->up = u;
			c->sv = &u->servers[j];
			if ((c->timer = evtimer_new(base, check_start, c)) == NULL)
				goto fail;
			hc->nchecks++;
			evtimer_add_ms(c->timer, 0);
		}
	}
	return (hc);
fail:
	log_warnx("cannot run health checks: out of memory");
	health_checks_free(hc);
	return (NULL);
}

void
health_checks_free(struct health_checks *hc)
{
	size_t	i;

	if (hc == NULL)
		return;
	for (i = 0; i < hc->nchecks; i++) {
		if (hc->checks[i].xfer != NULL)
			transfer_abort(hc->checks[i].xfer);
		event_free(hc->checks[i].timer);
	}
	free(hc->checks);
	http_headers_clear(&hc->headers);
	config_unref(hc->conf);
	free(hc);
}

/* ---- metrics ------------------------------------------------------------- */

/* A label value as Prometheus wants it: \ " and newline escaped. */
static void
add_label_value(struct evbuffer *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			evbuffer_add_printf(out, "\\%c", *s);
		else
			evbuffer_add(out, s, 1);
	}
}

static void
render_family(struct evbuffer *out, const struct config *conf,
    const char *name, const char *help, const char *type, int up)
{
	const struct upstream_conf	*u;
	const struct server_conf	*sv;
	uint64_t			 now = 0;
	size_t				 i, j;

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
	for (i = 0; i < conf->nupstreams; i++) {
		u = conf->upstreams[i];
		for (j = 0; j < u->nservers; j++) {
			sv = &u->servers[j];
			evbuffer_add_printf(out, "%s{upstream=\"%s\",server=\"",
			    name, u->name);
			add_label_value(out, sv->url);
			evbuffer_add_printf(out, "\"} %llu\n", up ?
			    (unsigned long long)server_available(sv->st, &now) :
			    (unsigned long long)ATOMIC_LOAD(&sv->st->ejections));
		}
	}
}

void
health_render(struct evbuffer *out, const struct config *conf)
{
	render_family(out, conf, "fanoutd_upstream_server_up",
	    "1 when a server takes legs, 0 when ejected or failing its "
	    "health checks.", "gauge", 1);
	render_family(out, conf, "fanoutd_upstream_ejections_total",
	    "Times a server was ejected by passive health.", "counter", 0);
}
