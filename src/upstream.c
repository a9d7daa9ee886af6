/*
 * upstream.c: libcurl multi on a libevent event_base.
 *
 * Rules this file keeps, all learned the hard way by curl users:
 * - curl is never re-entered from its own callbacks: the socket and timer
 *   callbacks only (re)arm events; curl_multi_socket_action runs from
 *   those events.
 * - Completed transfers are handled after curl_multi_socket_action has
 *   returned, one CURLMsg at a time, copying what is needed out of the
 *   message before any handle is removed (removing a handle drops its
 *   queued message, so the loop asks curl again each time).
 * - Every easy handle is removed from the multi before curl_easy_cleanup:
 *   cleaning up a handle still in the multi can return its connection to
 *   the pool with the old request still on it (curl issue 17578, seen on
 *   7.88). Removing an unfinished HTTP/1.1 transfer makes curl close its
 *   connection, which is how the upstream learns that nobody is waiting
 *   any more; an HTTP/2 one has its stream reset (transfer_unqueue_reset).
 */
#ifdef HAVE_CONFIG_H
#include "autoconf.h"
#endif

#include <errno.h>
#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"
#include "util.h"

/*
 * Easy handles kept for reuse: up to EASY_POOL_MAX lean ones, and apart
 * from them at most EASY_FAT_MAX that sent a request body. curl 8.14 gives
 * a handle a send buffer (CURLOPT_UPLOAD_BUFFERSIZE, 64 KiB) the first
 * time a request does not go out whole at once, as any request with a body
 * does, and keeps it as a spare until curl_easy_cleanup: curl_easy_reset
 * does not free it. Measured with 8.14: a handle holds 6.5 KiB after a GET,
 * 70.5 KiB after a POST, HTTP/1.1 or h2c alike; neither HTTP/2 nor a large
 * answer leaves anything on the handle (the connection holds those
 * buffers). 256 fat handles would be 18 MiB per worker.
 * After IDLE_TICKS ticks of IDLE_TICK_MS with no transfer started or in
 * flight, a worker keeps EASY_POOL_IDLE lean handles and no fat one, and
 * gives glibc's free memory back (malloc_trim).
 */
#define EASY_POOL_MAX	256
#define EASY_FAT_MAX	8
#define EASY_POOL_IDLE	8
#define IDLE_TICK_MS	5000
#define IDLE_TICKS	2
#define RST_FLUSHED	0x080f00	/* 8.15.0: sends the RST_STREAM itself */
#define PORTMAP_SIZE	1024
#define PRUNE_AGAIN_MS	1100	/* curl prunes at most once a second */
#define PRUNE_SETTLE_MS	50	/* closes from one burst, in one prune */
#define PRUNE_TRIES	10

/*
 * A transfer's connect_timeout and timeout are kept here, not given to
 * curl (CURLOPT_CONNECTTIMEOUT_MS, CURLOPT_TIMEOUT_MS): curl files each in
 * a splay tree and a list per handle, about 1k instructions per transfer
 * apiece, and moves its multi timer with them (bench/README.md, issue 22).
 * A worker has few distinct spans (an upstream's two, health_timeout), and
 * transfers start in time order, so one FIFO per span is sorted by due
 * time: adding and removing cost a TAILQ operation, and one lazy timer
 * (upstreams_xtimer_cb) serves the earliest head. A transfer waits for its
 * connection (until the PREREQFUNCTION says it is there) and for its end;
 * the first due ends it as curl's own timeout did (CURLE_OPERATION_TIMEDOUT,
 * classified by whether the request went out).
 */
struct xqueue;

struct xwait {
	TAILQ_ENTRY(xwait)	 entry;
	struct transfer		*x;
	struct xqueue		*q;		/* NULL: not waiting */
	uint64_t		 due;		/* now_us() */
};

struct xqueue {
	uint64_t		 span;		/* microseconds */
	TAILQ_HEAD(, xwait)	 waits;		/* by due time */
};

/* An upstream's scheme://authority, and curl's parse of it. */
struct origin {
	char			*url;
	size_t			 len;
	CURLU			*cu;
};

/*
 * An easy handle and what fanoutd knows of it. Its callbacks' data and
 * CURLOPT_PRIVATE point here, set once, and x says which transfer it is on
 * now; the options that follow the upstream or the method are set only
 * when they differ from the handle's last transfer's (set: -2 unknown).
 * curl_easy_setopt costs about 100 instructions a call, and a transfer
 * would otherwise make 19 of them.
 */
struct easy {
	CURL			*e;
	struct transfer		*x;		/* NULL between transfers */
	struct {
		long		 dns_s;
		long		 httpver;
		curl_off_t	 maxsize;
		int		 plain_get;	/* method options: a GET's */
	}			 set;
};

struct upstreams {
	struct event_base	*base;
	CURLM			*multi;
	struct lazy_timer	 timer;		/* curl's (util.h) */
	int			 in_timer;	/* upstreams_timer_cb runs */
	/* The transfers' own timeouts (struct xqueue); the timer is owed
	 * at the earliest head's due time, as last known. */
	struct xqueue		**xq;
	size_t			 nxq;
	struct lazy_timer	 xtimer;
	int			 running;
	/* Connections whose queued RST_STREAM is to be pushed out, and the
	 * event that does it (see transfer_unqueue_reset). */
	struct event		*kick;
	struct sockwatch	*kicks;
	int			 rst_unflushed;	/* libcurl before 8.15 */
	/* Easy handles kept for reuse, as configured (see easy_get). */
	struct easy		*pool[EASY_POOL_MAX];
	size_t			 npool;
	struct easy		*fat[EASY_FAT_MAX];	/* with a send buffer */
	size_t			 nfat;
	/* Idle trimming: transfers started and in flight, and the ticks
	 * that saw neither. */
	struct event		*idle;
	unsigned long		 started, seen;
	unsigned long		 running_xfers;
	int			 quiet;
	char			*cainfo;	/* libcurl's default CA file */
	/* The origins transfers went to, parsed (see upstreams_origin). */
	struct origin		*origins;
	size_t			 norigins;
	/* Socket watches by descriptor (see struct sockwatch). */
	struct sockwatch	**watch;
	size_t			 nwatch;
	/* Our connections by local port, for CURLOPT_PREREQFUNCTION. */
	struct sockwatch	*byport[PORTMAP_SIZE];
	/* Resting connections the upstream closed, shut and waiting for
	 * curl to close them, and what makes it (see upstreams_prune_cb). */
	unsigned		 ndead;
	struct event		*prune;
	CURL			*pruner;
	int			 pruning;	/* pruner in the multi */
	int			 prune_tries;	/* without one closed */
};

/*
 * One per socket curl asks us to watch. A socket we opened for curl (an
 * upstream connection) stays registered for reading while it rests in
 * curl's connection cache: the next transfer on it then costs no
 * epoll_ctl at all, where removing and adding it again cost two per
 * request; and the upstream's close (a keep-alive timeout) is seen at
 * once, not when curl next looks at its cache (watch_kill). Such a watch
 * lives until curl closes the socket through transfer_close_cb, so its
 * descriptor cannot be reused behind our back. Sockets curl makes by
 * itself (a resolver's socketpair) are closed without telling us and are
 * unwatched at once when curl lets them go.
 *
 * owner is the HTTP/1.1 transfer whose request went out on the
 * connection, from CURLOPT_PREREQFUNCTION until the transfer is released
 * (HTTP/2 transfers join h2_users instead): the socket callback alone
 * cannot say, since a transfer may take a resting connection, read its
 * answer and pause within one curl call without one. Outside that span
 * an HTTP/1.1 connection owes nobody a byte.
 */
struct sockwatch {
	struct upstreams	*u;
	curl_socket_t		 fd;
	struct event		 ev;
	short			 registered;	/* events added, 0: none */
	short			 wanted;	/* what curl asked, 0: none */
	int			 ours;		/* opened by transfer_socket_cb */
	int			 plain_h1;	/* cleartext HTTP/1.1 */
	struct transfer		*owner;		/* owner->conn == this */
	LIST_HEAD(, transfer)	 h2_users;	/* HTTP/2 transfers on it */
	struct sockwatch	*port_next;	/* in u->byport */
	struct sockwatch	*kick_next;	/* in u->kicks */
	int			 kicked;
	int			 mapped;
	int			 dead;		/* shut: curl is to close it */
	int			 lport;		/* local port, when mapped */
	int			 rport;
	char			 rip[64];	/* curl's "primary IP" */
};

struct transfer {
	struct upstreams	*u;
	struct easy		*eh;		/* its handle, NULL once released */
	struct curl_slist	*sendhdrs;	/* after the struct, in its */
	char			*target;	/* allocation, as this is */
	transfer_done_cb	 cb;
	void			*arg;
	uint64_t		 started_us;
	uint64_t		 max_size;
	int			 too_large;
	int			 status;
	struct http_headers	 headers;
	struct http_headers	 trailer;	/* fields after the body */
	struct evbuffer		*body;
	const struct transfer_stream *stream;
	uint64_t		 streamed;	/* body bytes handed over */
	int			 paused;	/* receiving, for the stream */
	int			 send_paused;	/* sending, for the source */
	const struct transfer_source *source;
	int			 sending;	/* connected (or reused) */
	int			 trailers;	/* past the final head */
	int			 no_socket;	/* socket(2) failed: EMFILE... */
	int			 plain_h1;	/* http:// and HTTP/1.1 */
	int			 h2;		/* may share its connection */
	int			 fat;		/* its easy handle has a send buffer */
	struct sockwatch	*conn;		/* conn->owner == this */
	/* An HTTP/2 transfer's connection (it has no owner), while curl
	 * only queues the RST_STREAM of a removed transfer. */
	struct sockwatch	*h2conn;
	LIST_ENTRY(transfer)	 h2_entry;	/* in h2conn->h2_users */
	curl_socket_t		 opened[2];	/* sockets opened for it */
	int			 nopened;
	struct xwait		 wait_conn;	/* connect_timeout */
	struct xwait		 wait_end;	/* timeout */
};

static void	upstreams_check_done(struct upstreams *);
static int	xwait_add(struct upstreams *, struct transfer *,
		    struct xwait *, uint64_t ms, uint64_t start);
static void	xwait_del(struct xwait *);
static void	xqueues_free(struct upstreams *, int all);
static void	upstreams_xtimer_cb(evutil_socket_t, short, void *);
static void	transfer_done(struct transfer *, CURLcode);
static void	easy_free(struct easy *);
static void	upstreams_prune_soon(struct upstreams *);
static void	upstreams_event_cb(evutil_socket_t, short, void *);
static size_t	transfer_read_cb(char *, size_t, size_t, void *);
static int	transfer_pause_mask(const struct transfer *);

/* x->paused, with the gauge that counts paused transfers. */
static void
transfer_set_paused(struct transfer *x, int paused)
{
	if (x->paused == paused)
		return;
	x->paused = paused;
	metrics_gauge_add(G_TRANSFERS_PAUSED, paused ? 1 : -1);
}

const char *
transfer_error_name(enum transfer_error e)
{
	switch (e) {
	case XFER_OK:		return "ok";
	case XFER_TIMEOUT:	return "timeout";
	case XFER_CONNECT:	return "connect";
	case XFER_RESET:	return "reset";
	case XFER_PROTOCOL:	return "protocol";
	case XFER_TOO_LARGE:	return "too_large";
	case XFER_NO_SOCKET:	return "connect";	/* as far as users go */
	case XFER_UNAVAILABLE:	return "unavailable";
	}
	return "protocol";
}

static void
port_insert(struct upstreams *u, struct sockwatch *sw)
{
	struct sockwatch	**b = &u->byport[sw->lport % PORTMAP_SIZE];

	sw->port_next = *b;
	*b = sw;
	sw->mapped = 1;
}

static void
port_remove(struct upstreams *u, struct sockwatch *sw)
{
	struct sockwatch	**p = &u->byport[sw->lport % PORTMAP_SIZE];

	while (*p != NULL && *p != sw)
		p = &(*p)->port_next;
	if (*p == sw)
		*p = sw->port_next;
	sw->mapped = 0;
}

static struct sockwatch *
port_find(struct upstreams *u, int lport, int rport, const char *rip)
{
	struct sockwatch	*sw;

	for (sw = u->byport[lport % PORTMAP_SIZE]; sw != NULL;
	    sw = sw->port_next)
		if (sw->lport == lport && sw->rport == rport &&
		    strcmp(sw->rip, rip) == 0)
			return (sw);
	return (NULL);
}

static struct sockwatch *
watch_get(struct upstreams *u, curl_socket_t s, int create)
{
	struct sockwatch	**v, *sw;
	size_t			  n;

	if (s < 0)
		return (NULL);
	if ((size_t)s < u->nwatch && u->watch[s] != NULL)
		return (u->watch[s]);
	if (!create)
		return (NULL);
	if ((size_t)s >= u->nwatch) {
		n = u->nwatch ? u->nwatch : 64;
		while (n <= (size_t)s)
			n *= 2;
		if ((v = reallocarray(u->watch, n, sizeof *v)) == NULL)
			return (NULL);
		memset(v + u->nwatch, 0, (n - u->nwatch) * sizeof *v);
		u->watch = v;
		u->nwatch = n;
	}
	if ((sw = calloc(1, sizeof *sw)) == NULL)
		return (NULL);
	sw->u = u;
	sw->fd = s;
	u->watch[s] = sw;
	return (sw);
}

static void
watch_free(struct upstreams *u, curl_socket_t s)
{
	struct sockwatch	*sw = watch_get(u, s, 0), **p;
	struct transfer		*x;

	if (sw == NULL)
		return;
	/* Safe even from this event's own callback. */
	if (sw->registered)
		event_del(&sw->ev);
	if (sw->owner != NULL)
		sw->owner->conn = NULL;
	while ((x = LIST_FIRST(&sw->h2_users)) != NULL) {
		LIST_REMOVE(x, h2_entry);
		x->h2conn = NULL;
	}
	if (sw->mapped)
		port_remove(u, sw);
	if (sw->kicked) {
		for (p = &u->kicks; *p != sw; p = &(*p)->kick_next)
			;
		*p = sw->kick_next;
	}
	if (sw->dead) {
		u->ndead--;
		u->prune_tries = 0;
	}
	u->watch[s] = NULL;
	free(sw);
}

/*
 * Listen for events on a watched socket (0: for none), from whatever it
 * listened for before. 0, or -1 if libevent would not add it.
 */
static int
watch_listen(struct sockwatch *sw, short events)
{
	if (sw->registered == events)
		return (0);
	if (sw->registered)
		event_del(&sw->ev);
	sw->registered = 0;
	if (events == 0)
		return (0);
	event_assign(&sw->ev, sw->u->base, sw->fd, events, upstreams_event_cb,
	    sw);
	if (event_add(&sw->ev, NULL) == -1)
		return (-1);
	sw->registered = events;
	return (0);
}

/*
 * Whether a socket curl does not wait on rests in its cache, as far as
 * the port map can say: no HTTP/1.1 transfer owns it and no HTTP/2 one
 * is on it. A transfer paused for its client also leaves curl waiting on
 * nothing, and its connection must be left alone. A cleartext HTTP/1.1
 * socket never mapped never carried a request.
 */
static int
watch_resting(const struct sockwatch *sw)
{
	return (sw->ours && sw->owner == NULL && LIST_EMPTY(&sw->h2_users) &&
	    (sw->mapped || sw->plain_h1));
}

enum watch_state { WATCH_QUIET, WATCH_BYTES, WATCH_GONE };

/*
 * What a readable socket holds. poll's POLLRDHUP sees the upstream's FIN
 * even behind unread bytes (a TLS close_notify, an HTTP/2 GOAWAY), and
 * POLLHUP/POLLERR its reset; a recv would see only the bytes.
 */
static enum watch_state
watch_peek(curl_socket_t fd)
{
	struct pollfd	pfd;

	pfd.fd = fd;
	pfd.events = POLLIN | POLLRDHUP;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) <= 0)
		return (WATCH_QUIET);
	if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))
		return (WATCH_GONE);
	return (pfd.revents & POLLIN ? WATCH_BYTES : WATCH_QUIET);
}

/*
 * A resting connection must never carry another request: the upstream
 * closed it, or (cleartext HTTP/1.1) sent bytes that answer nothing (a
 * stale "408" before a close, say: curl 7.88 took them for the next
 * answer). Shut it now, so that the upstream's side is gone at once
 * (no CLOSE-WAIT here) and curl's check before reuse finds it dead (8.14
 * polls and peeks: a shut socket is POLLHUP). Its descriptor stays
 * until curl closes it, which curl does only when it looks at its cache:
 * upstreams_prune_cb makes it look. Unwatched: level-triggered, a shut
 * socket is readable for ever.
 */
static void
watch_kill(struct sockwatch *sw, const char *why)
{
	struct upstreams	*u = sw->u;

	log_debug("resting upstream connection %s, shut fd=%d", why,
	    (int)sw->fd);
	shutdown(sw->fd, SHUT_RDWR);
	watch_listen(sw, 0);
	if (!sw->dead) {
		sw->dead = 1;
		u->ndead++;
		u->prune_tries = 0;
	}
	upstreams_prune_soon(u);
}

/* Bytes on a cleartext HTTP/1.1 connection at rest: read them away. */
static void
watch_retire(struct sockwatch *sw)
{
	char	buf[4096];
	int	i;

	watch_kill(sw, "sent bytes while resting");
	for (i = 0; i < 16; i++)
		if (recv(sw->fd, buf, sizeof buf, MSG_DONTWAIT) <= 0)
			break;
}

static void
upstreams_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockwatch	*sw = arg;
	struct upstreams	*u = sw->u;
	int			 action = 0;

	if (!sw->wanted) {
		/*
		 * Nobody waits on this socket: a paused transfer holds it,
		 * or it rests in curl's cache and the upstream closed it or
		 * sent something. The event may also be stale: the transfer
		 * read its answer from an earlier callback of this pass and
		 * let the socket rest, and nothing is waiting (the watch then
		 * stays). A resting connection the upstream closed, or a
		 * cleartext HTTP/1.1 one that got bytes, is shut for curl to
		 * close (watch_kill). Otherwise stop listening (curl looks
		 * again before reuse or on resume); level-triggered it would
		 * spin.
		 */
		if (watch_resting(sw) && !sw->dead) {
			switch (watch_peek(fd)) {
			case WATCH_QUIET:
				return;
			case WATCH_GONE:
				watch_kill(sw, "closed by the upstream");
				return;
			case WATCH_BYTES:
				/* TLS or HTTP/2: a close_notify, GOAWAY or
				 * PING, curl's to read on its next use.
				 * Level-triggered they would fire for ever;
				 * edge-triggered the next thing to come, the
				 * FIN most likely, fires once more. */
				if (sw->plain_h1)
					watch_retire(sw);
				else
					watch_listen(sw, EV_READ | EV_ET |
					    EV_PERSIST);
				return;
			}
		}
		watch_listen(sw, 0);
		return;
	}
	if (what & EV_READ)
		action |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	/* May close the socket, freeing sw: only u from here on. */
	curl_multi_socket_action(u->multi, fd, action, &u->running);
	upstreams_check_done(u);
}

static void
watch_shut(struct sockwatch *sw)
{
	log_debug("upstream stream cancelled, its connection idle: shut fd=%d",
	    (int)sw->fd);
	shutdown(sw->fd, SHUT_RDWR);
}

/*
 * Push out the RST_STREAM frames libcurl queued on HTTP/2 connections (see
 * transfer_unqueue_reset): a socket_action on a connection makes curl run
 * the transfers on it, and each of them flushes the connection's send
 * buffer. A transfer paused for its client is not among them (curl wants
 * nothing from the socket for it); pausing it again as it is has curl run
 * it with the next socket_action, which flushes without reading (with its
 * state unchanged, curl_easy_pause calls nothing back). Run from
 * the loop, never from code that a curl call or a request's abort is
 * running, since curl then calls back into requests.
 */
static void
upstreams_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstreams	*u = arg;
	struct sockwatch	*sw;
	struct transfer		*x;

	while ((sw = u->kicks) != NULL) {
		u->kicks = sw->kick_next;
		sw->kicked = 0;
		if (LIST_EMPTY(&sw->h2_users)) {
			watch_shut(sw);	/* its last transfer went since */
			continue;
		}
		LIST_FOREACH(x, &sw->h2_users, h2_entry)
			if (x->paused)
				curl_easy_pause(x->eh->e, transfer_pause_mask(x));
		/* May close sockets, freeing their watches (and unlinking
		 * them from u->kicks). */
		curl_multi_socket_action(u->multi, sw->fd,
		    CURL_CSELECT_IN | CURL_CSELECT_OUT,
		    &u->running);
	}
	upstreams_check_done(u);
}

static void
upstreams_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstreams	*u = arg;

	if (!lazy_timer_fired(&u->timer))
		return;
	u->in_timer = 1;
	curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
	u->in_timer = 0;
	upstreams_check_done(u);
}

/* ---- The transfers' own timeouts (struct xqueue) ------------------------ */

/* x's w waits ms from start (now_us()) in its span's queue. 0 / -1. */
static int
xwait_add(struct upstreams *u, struct transfer *x, struct xwait *w,
    uint64_t ms, uint64_t start)
{
	struct xqueue	*q = NULL, **qs;
	uint64_t	 span = ms * 1000;
	size_t		 i;

	if (ms == 0)
		return (0);	/* none (the configuration has no such key) */
	for (i = 0; i < u->nxq; i++) {
		if (u->xq[i]->span == span) {
			q = u->xq[i];
			break;
		}
	}
	if (q == NULL) {
		if ((qs = reallocarray(u->xq, u->nxq + 1, sizeof *qs)) == NULL)
			return (-1);
		u->xq = qs;
		if ((q = malloc(sizeof *q)) == NULL)
			return (-1);
		q->span = span;
		TAILQ_INIT(&q->waits);
		u->xq[u->nxq++] = q;
	}
	w->x = x;
	w->q = q;
	w->due = start + span;
	TAILQ_INSERT_TAIL(&q->waits, w, entry);
	if (u->xtimer.due == 0 || w->due < u->xtimer.due)
		lazy_timer_set(&u->xtimer, w->due, start);
	return (0);
}

static void
xwait_del(struct xwait *w)
{
	if (w->q == NULL)
		return;
	TAILQ_REMOVE(&w->q->waits, w, entry);
	w->q = NULL;
}

/* The queues nobody waits in (all: every queue, empty by now). */
static void
xqueues_free(struct upstreams *u, int all)
{
	size_t	i, n = 0;

	for (i = 0; i < u->nxq; i++) {
		if (all || TAILQ_EMPTY(&u->xq[i]->waits))
			free(u->xq[i]);
		else
			u->xq[n++] = u->xq[i];
	}
	u->nxq = n;
	if (n == 0) {
		free(u->xq);
		u->xq = NULL;
	}
}

/*
 * The earliest wait is due: end its transfer as curl's timeout did, and
 * go on with the next. Ending one may end or start others (their waits
 * come and go meanwhile), so the heads are looked at again each time.
 */
static void
upstreams_xtimer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstreams	*u = arg;
	struct xwait		*w, *first;
	struct transfer		*x;
	uint64_t		 now;
	size_t			 i;

	if (!lazy_timer_fired(&u->xtimer))
		return;
	now = now_us();
	for (;;) {
		first = NULL;
		for (i = 0; i < u->nxq; i++) {
			w = TAILQ_FIRST(&u->xq[i]->waits);
			if (w != NULL && (first == NULL || w->due < first->due))
				first = w;
		}
		if (first == NULL)
			return;
		if (first->due > now) {
			lazy_timer_set(&u->xtimer, first->due, now);
			return;
		}
		x = first->x;
		log_debug("upstream: transfer timed out (%s) after %llu ms",
		    x->sending ? "timeout" : "connect_timeout",
		    (unsigned long long)((now - x->started_us) / 1000));
		transfer_done(x, CURLE_OPERATION_TIMEDOUT);
	}
}

/* The pruner never connects: it is a transfer only to reach the prune. */
static curl_socket_t
pruner_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	return (CURL_SOCKET_BAD);
}

static CURL *
pruner_new(void)
{
	CURL	*e;

	if ((e = curl_easy_init()) == NULL)
		return (NULL);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_URL, "http://127.0.0.1:9/");
	curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, pruner_socket_cb);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
	return (e);
}

/*
 * Make curl close the resting connections watch_kill shut. libcurl 8.14
 * has no call for that: a socket_action on a socket no transfer holds
 * finds nothing to run, and curl_easy_upkeep only pings. It drops dead
 * connections from its cache (Curl_cpool_prune_dead: each idle one is
 * polled, found dead, closed through CLOSESOCKETFUNCTION) when a transfer
 * looks for a connection, at most once a second. The pruner is such a
 * transfer, told to take no pooled connection and unable to open one: it
 * fails at once, having had curl prune. Under traffic transfers prune
 * anyway; at rest the pruner does, so a dead connection's descriptor
 * goes within about a second. If the prune was skipped (one ran less
 * than a second ago) the pruner goes again a second later, a few times.
 */
static void
upstreams_prune_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstreams	*u = arg;

	if (u->ndead == 0 || u->pruning)
		return;
	if (u->prune_tries >= PRUNE_TRIES) {
		log_debug("curl kept %u shut upstream connections, not asking "
		    "again", u->ndead);
		return;
	}
	u->prune_tries++;
	if (u->pruner == NULL && (u->pruner = pruner_new()) == NULL)
		goto again;
	if (curl_multi_add_handle(u->multi, u->pruner) != CURLM_OK)
		goto again;
	u->pruning = 1;	/* runs from the timer curl sets now */
	return;
again:
	evtimer_add_ms(u->prune, PRUNE_AGAIN_MS);
}

/*
 * An upstream's keep-alive timeout ends the connections of a burst a few
 * milliseconds apart: a prune a little later takes them all, where one
 * at the first would leave the others for a second.
 */
static void
upstreams_prune_soon(struct upstreams *u)
{
	if (!u->pruning && !evtimer_pending(u->prune, NULL))
		evtimer_add_ms(u->prune, PRUNE_SETTLE_MS);
}

/* The pruner's transfer ended (it always fails). */
static void
upstreams_pruned(struct upstreams *u)
{
	curl_multi_remove_handle(u->multi, u->pruner);
	u->pruning = 0;
	if (u->ndead > 0)
		evtimer_add_ms(u->prune, PRUNE_AGAIN_MS);
}

/* CURLMOPT_SOCKETFUNCTION: only arm or disarm events here. */
static int
upstreams_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
	struct upstreams	*u = userp;
	struct sockwatch	*sw;
	short			 events = EV_PERSIST;

	if (what == CURL_POLL_REMOVE) {
		if ((sw = watch_get(u, s, 0)) == NULL)
			return (0);
		sw->wanted = 0;
		if (!sw->ours)
			watch_free(u, s);
		else if (sw->registered & EV_WRITE)
			/* Writable would fire at once, and forever; reading
			 * stays, to see the upstream close it. */
			watch_listen(sw, sw->dead ? 0 : EV_READ | EV_PERSIST);
		return (0);
	}
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	if ((sw = watch_get(u, s, 1)) == NULL)
		return (-1);
	sw->wanted = events;
	return (watch_listen(sw, events));
}

/*
 * CURLMOPT_TIMERFUNCTION: only arm or disarm the timer here. A timeout of 0
 * (curl has work to do at once: every transfer started asks for it) runs
 * the timer later in this pass of the loop, rather than through a timer due
 * now, which costs a timerfd_settime and a pass of epoll_wait of its own.
 * Not when the timer itself asks: libevent runs what is activated during a
 * pass in that pass, and curl asking again and again (a paused transfer)
 * would keep the loop from ever polling; that waits for the next pass.
 *
 * curl moves its timeout more than once per transfer, and each new value
 * replaces the last: the timer is lazy (util.h), so only a sooner one costs
 * an event_add (bench/README.md, issue 22).
 */
static int
upstreams_timerfn(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstreams	*u = userp;
	uint64_t		 now;

	if (timeout_ms < 0) {
		lazy_timer_clear(&u->timer);
		return (0);
	}
	now = now_us();
	if (timeout_ms == 0 && !u->in_timer) {
		lazy_timer_soon(&u->timer, now);
		return (0);
	}
	return (lazy_timer_set(&u->timer, now + (uint64_t)timeout_ms * 1000,
	    now));
}

/*
 * The parsed origin (scheme://authority) of url, whose first len bytes it
 * is. Given a URL (CURLOPT_URL), curl parses all of it again for every
 * transfer, about 6k instructions; given a CURLU of the origin, parsed once
 * here, and the rest as CURLOPT_REQUEST_TARGET, which it sends as it is, it
 * does not (bench/README.md, issue 22). A handle points at its CURLU until
 * its transfer starts, so they are kept until the worker is idle
 * (upstreams_origins_free); a reload's new servers add theirs.
 */
static CURLU *
upstreams_origin(struct upstreams *u, const char *url, size_t len)
{
	struct origin	*o;
	size_t		 i;

	for (i = 0; i < u->norigins; i++) {
		o = &u->origins[i];
		if (o->len == len && memcmp(o->url, url, len) == 0)
			return (o->cu);
	}
	if ((o = reallocarray(u->origins, u->norigins + 1, sizeof *o)) == NULL)
		return (NULL);
	u->origins = o;
	o = &u->origins[u->norigins];
	if ((o->url = strndup(url, len)) == NULL)
		return (NULL);
	o->len = len;
	if ((o->cu = curl_url()) == NULL ||
	    curl_url_set(o->cu, CURLUPART_URL, o->url, 0) != CURLUE_OK) {
		log_warnx("upstream: libcurl cannot parse %s", o->url);
		curl_url_cleanup(o->cu);
		free(o->url);
		return (NULL);
	}
	u->norigins++;
	return (o->cu);
}

/* Only with no transfer in flight or started: none points at them. */
static void
upstreams_origins_free(struct upstreams *u)
{
	size_t	i;

	for (i = 0; i < u->norigins; i++) {
		curl_url_cleanup(u->origins[i].cu);
		free(u->origins[i].url);
	}
	free(u->origins);
	u->origins = NULL;
	u->norigins = 0;
}

/* Keep at most keep lean pooled handles and no fat one. */
static void
upstreams_trim(struct upstreams *u, size_t keep)
{
	while (u->nfat > 0)
		easy_free(u->fat[--u->nfat]);
	while (u->npool > keep)
		easy_free(u->pool[--u->npool]);
}

/*
 * A worker quiet for IDLE_TICKS ticks (no transfer started, none in flight)
 * lets go of its spare handles and hands the freed memory back to the
 * kernel, once until the next transfer. The hot path pays one increment.
 */
static void
upstreams_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstreams	*u = arg;
	uint64_t		 t0;
	size_t			 lean = u->npool, fat = u->nfat;

	if (u->started != u->seen || u->running_xfers > 0) {
		u->seen = u->started;
		u->quiet = 0;
		return;
	}
	if (++u->quiet != IDLE_TICKS)
		return;
	t0 = now_us();
	upstreams_trim(u, EASY_POOL_IDLE);
	upstreams_origins_free(u);
	xqueues_free(u, 0);
#ifdef HAVE_MALLOC_TRIM
	/* Every arena, one lock at a time: another worker's allocations wait
	 * at most for the trim of its own arena, once per quiet period. */
	malloc_trim(0);
#endif
	log_debug("idle: pool trimmed lean=%zu fat=%zu (was %zu, %zu) in %llu us",
	    u->npool, u->nfat, lean, fat, (unsigned long long)(now_us() - t0));
}

struct upstreams *
upstreams_new(struct event_base *base, unsigned long pool)
{
	struct upstreams	*u;
	CURL			*e;
	char			*ca = NULL;

	if ((u = calloc(1, sizeof *u)) == NULL)
		return (NULL);
	u->base = base;
	if ((u->multi = curl_multi_init()) == NULL)
		goto fail;
	if ((u->timer.ev = evtimer_new(base, upstreams_timer_cb, u)) == NULL)
		goto fail;
	if ((u->xtimer.ev = evtimer_new(base, upstreams_xtimer_cb, u)) ==
	    NULL)
		goto fail;
	if ((u->kick = event_new(base, -1, 0, upstreams_kick_cb, u)) == NULL)
		goto fail;
	if ((u->prune = evtimer_new(base, upstreams_prune_cb, u)) == NULL)
		goto fail;
	if ((u->idle = event_new(base, -1, EV_PERSIST, upstreams_idle_cb,
	    u)) == NULL || evtimer_add_ms(u->idle, IDLE_TICK_MS) == -1)
		goto fail;
	u->rst_unflushed =
	    curl_version_info(CURLVERSION_NOW)->version_num < RST_FLUSHED;
	if ((e = curl_easy_init()) == NULL)
		goto fail;
	if (curl_easy_getinfo(e, CURLINFO_CAINFO, &ca) == CURLE_OK &&
	    ca != NULL && (u->cainfo = strdup(ca)) == NULL) {
		curl_easy_cleanup(e);
		goto fail;
	}
	curl_easy_cleanup(e);
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, upstreams_socket_cb);
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, upstreams_timerfn);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)pool);
	return (u);
fail:
	if (u->idle != NULL)
		event_free(u->idle);
	if (u->prune != NULL)
		event_free(u->prune);
	if (u->kick != NULL)
		event_free(u->kick);
	if (u->timer.ev != NULL)
		event_free(u->timer.ev);
	if (u->xtimer.ev != NULL)
		event_free(u->xtimer.ev);
	if (u->multi != NULL)
		curl_multi_cleanup(u->multi);
	free(u);
	return (NULL);
}

void
upstreams_free(struct upstreams *u)
{
	size_t	i;

	if (u == NULL)
		return;
	upstreams_trim(u, 0);
	if (u->pruning)
		curl_multi_remove_handle(u->multi, u->pruner);
	if (u->pruner != NULL)
		curl_easy_cleanup(u->pruner);
	/* Owners abort their transfers first; this closes idle connections. */
	curl_multi_cleanup(u->multi);
	upstreams_origins_free(u);
	for (i = 0; i < u->nwatch; i++)
		watch_free(u, (curl_socket_t)i);
	free(u->watch);
	free(u->cainfo);
	event_free(u->idle);
	event_free(u->prune);
	event_free(u->kick);
	event_free(u->timer.ev);
	event_free(u->xtimer.ev);
	xqueues_free(u, 1);
	free(u);
}

static size_t
transfer_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer	*x = ((struct easy *)arg)->x;
	size_t		 len = size * nmemb;

	if ((x->body != NULL ? evbuffer_get_length(x->body) : 0) + x->streamed +
	    len > x->max_size) {
		x->too_large = 1;
		return (0);	/* curl ends the transfer: CURLE_WRITE_ERROR */
	}
	if (x->stream != NULL) {
		switch (x->stream->data(x->arg, data, len)) {
		case 1:
			transfer_set_paused(x, 1);
			return (CURL_WRITEFUNC_PAUSE);
		case -1:
			x->too_large = 1;
			return (0);
		}
		x->streamed += len;
		return (len);
	}
	/* Made for the first byte kept: a streamed answer keeps none. */
	if (x->body == NULL && (x->body = evbuffer_new()) == NULL)
		return (0);
	if (evbuffer_add(x->body, data, len) == -1)
		return (0);
	return (len);
}

/* "HTTP/1.1 200 OK" -> 200; 0 when unreadable. */
static int
transfer_status_line(const char *s, size_t len)
{
	size_t	i = 5;
	int	status = 0;

	while (i < len && s[i] != ' ')
		i++;
	while (i < len && s[i] == ' ')
		i++;
	for (; i < len && s[i] >= '0' && s[i] <= '9' && status < 1000; i++)
		status = status * 10 + (s[i] - '0');
	return (status >= 100 && status <= 999 ? status : 0);
}

/* What a stream can promise its client: -1 when the length is unknown. */
static long long
transfer_content_length(struct transfer *x)
{
	const struct http_header	*cl, *te;
	uint64_t			 v;

	te = http_headers_get(&x->headers, "transfer-encoding");
	cl = http_headers_get(&x->headers, "content-length");
	if (te != NULL || cl == NULL ||
	    parse_u64(cl->value, cl->valuelen, INT64_MAX, &v) == -1)
		return (-1);
	return ((long long)v);
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: curl's own socket(2), but we see why it
 * failed. Out of descriptors is our problem, not the upstream's, and curl
 * would report it as a plain "couldn't connect".
 */
static curl_socket_t
transfer_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct transfer		*x = ((struct easy *)arg)->x;
	struct sockwatch	*sw;
	curl_socket_t		 s;

	s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (s == -1) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM)
			x->no_socket = 1;
		return (CURL_SOCKET_BAD);
	}
	/* A watch left on this number means a socket of ours was closed
	 * without transfer_close_cb: it must not outlive its socket. */
	if (watch_get(x->u, s, 0) != NULL) {
		log_warn("upstream socket closed without the close callback "
		    "fd=%d", (int)s);
		watch_free(x->u, s);
	}
	if ((sw = watch_get(x->u, s, 1)) == NULL) {
		close(s);
		return (CURL_SOCKET_BAD);
	}
	sw->ours = 1;
	sw->plain_h1 = x->plain_h1;
	if (x->nopened < 2)
		x->opened[x->nopened++] = s;
	else
		x->opened[1] = s;
	return (s);
}

/*
 * CURLOPT_CLOSESOCKETFUNCTION: the end of every socket transfer_socket_cb
 * opened, whichever handle curl closes it from (its argument is the
 * upstreams, which outlive every connection of their multi).
 */
static int
transfer_close_cb(void *arg, curl_socket_t s)
{
	watch_free(arg, s);
	return (close(s));
}

static int
sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohs(((const struct sockaddr_in *)ss)->sin_port));
	if (ss->ss_family == AF_INET6)
		return (ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
	return (-1);
}

/* Map fd, a connected socket of ours, if it is the connection with these
 * ports (rip is curl's name for the peer's address); 0 when it is. */
static int
watch_map(struct upstreams *u, curl_socket_t fd, int lport, int rport,
    const char *rip)
{
	struct sockwatch	*sw = watch_get(u, fd, 0);
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof ss;

	if (sw == NULL || !sw->ours || sw->mapped ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) == -1 ||
	    sockaddr_port(&ss) != lport)
		return (-1);
	len = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == -1 ||
	    sockaddr_port(&ss) != rport)
		return (-1);
	sw->lport = lport;
	sw->rport = rport;
	str_copy(sw->rip, sizeof sw->rip, rip, strlen(rip));
	port_insert(u, sw);
	return (0);
}

/*
 * The request of x goes out on the connection with this local port: x
 * owns its socket until transfer_release(). A new connection is one of
 * the sockets opened for x; a reused one is in the port map, or (opened
 * for a transfer that never sent) mapped now from the table. An HTTP/2
 * transfer shares its connection and owns nothing: it only joins the
 * connection's list of transfers, for transfer_unqueue_reset.
 */
static void
transfer_own(struct transfer *x, const char *rip, int rport, int lport)
{
	struct upstreams	*u = x->u;
	struct sockwatch	*sw;
	size_t			 i;

	/* Every connection: one that rests is told from one in use. */
	if (rip == NULL || lport <= 0)
		return;
	sw = port_find(u, lport, rport, rip);
	for (i = 0; sw == NULL && i < (size_t)x->nopened; i++)
		if (watch_map(u, x->opened[i], lport, rport, rip) == 0)
			sw = port_find(u, lport, rport, rip);
	for (i = 0; sw == NULL && i < u->nwatch; i++)
		if (u->watch[i] != NULL && u->watch[i]->ours &&
		    !u->watch[i]->mapped &&
		    watch_map(u, (curl_socket_t)i, lport, rport, rip) == 0)
			sw = port_find(u, lport, rport, rip);
	if (sw == NULL) {
		log_debug("upstream connection not found local_port=%d", lport);
		return;
	}
	if (x->h2) {
		if (x->h2conn == sw)
			return;
		if (x->h2conn != NULL)
			LIST_REMOVE(x, h2_entry);
		LIST_INSERT_HEAD(&sw->h2_users, x, h2_entry);
		x->h2conn = sw;
		return;
	}
	if (x->conn != NULL && x->conn != sw)
		x->conn->owner = NULL;
	if (sw->owner != NULL && sw->owner != x)
		sw->owner->conn = NULL;
	sw->owner = x;
	x->conn = sw;
}

/* CURLOPT_PREREQFUNCTION: a connection is there, the request goes out. */
static int
transfer_prereq_cb(void *arg, char *conn_ip, char *local_ip, int conn_port,
    int local_port)
{
	struct transfer	*x = ((struct easy *)arg)->x;

	x->sending = 1;
	xwait_del(&x->wait_conn);
	transfer_own(x, conn_ip, conn_port, local_port);
	return (CURL_PREREQFUNC_OK);
}

static size_t
transfer_header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer		*x = ((struct easy *)arg)->x;
	struct http_headers	*hs;
	size_t			 len = size * nmemb, n, v, end;

	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		/* A new response (after 1xx): forget the previous one. */
		http_headers_clear(&x->headers);
		http_headers_clear(&x->trailer);
		x->status = transfer_status_line(data, len);
		x->trailers = 0;
		return (len);
	}
	end = len;
	while (end > 0 && (data[end - 1] == '\r' || data[end - 1] == '\n'))
		end--;
	if (end == 0) {
		/* The end of a head: the final one goes to a stream. */
		if (x->status >= 200 && !x->trailers) {
			x->trailers = 1;
			if (x->stream != NULL)
				x->stream->head(x->arg, x->status, &x->headers,
				    transfer_content_length(x));
		}
		return (len);
	}
	/*
	 * What reaches our client must be a well-formed field: a token name,
	 * a value without CR, LF, NUL or other controls, no folded line.
	 * Anything else from an upstream is a protocol error, not something
	 * to copy into a response (response splitting).
	 */
	n = http_token_len(data, end);	/* a folded line's SP is no token */
	if (n == 0 || n == end || data[n] != ':')
		return (0);	/* not a field line, or not a token name */
	for (v = n + 1; v < end && (data[v] == ' ' || data[v] == '\t'); v++)
		;
	while (end > v && (data[end - 1] == ' ' || data[end - 1] == '\t'))
		end--;
	if (!http_field_value_ok(data + v, end - v))
		return (0);
	/* Trailer fields (after the body) are kept apart: they are not
	 * headers, and go to the client after the body, or not at all. */
	hs = x->trailers ? &x->trailer : &x->headers;
	if (x->headers.bytes + x->trailer.bytes + len > 64 * 1024 ||
	    http_headers_add(hs, data, n, data + v, end - v) == -1)
		return (0);
	return (len);
}

static void
transfer_free(struct transfer *x)
{
	http_headers_clear(&x->headers);
	http_headers_clear(&x->trailer);
	if (x->body != NULL)
		evbuffer_free(x->body);
	free(x);	/* its header lines and target with it */
}

/*
 * An HTTP/2 transfer that ends before its stream does (cancelled, or
 * failed) has libcurl queue a RST_STREAM for it. libcurl before 8.15 only
 * queues it: it goes out with the connection's next write, which may be a
 * long time coming, and until then the upstream works on for nobody (curl
 * issue 17611). Called just after the transfer was removed and taken off
 * its connection's list:
 * - other transfers are still on the connection: have the loop make curl
 *   run them, which flushes the frame (upstreams_kick_cb). They count even
 *   when paused for a client that reads slowly: curl then wants nothing
 *   from the socket, but shutting it would cut their answers short;
 * - none is (now, or by the time the loop gets there): curl will not
 *   write to it before its next use. Shut it down, as a cancelled
 *   HTTP/1.1 transfer's connection is closed: the upstream stops, and curl
 *   finds it closed and drops it.
 */
static void
transfer_unqueue_reset(struct upstreams *u, struct sockwatch *sw)
{
	if (!u->rst_unflushed)
		return;
	if (LIST_EMPTY(&sw->h2_users))
		watch_shut(sw);
	else if (!sw->kicked) {
		sw->kicked = 1;
		sw->kick_next = u->kicks;
		u->kicks = sw;
		event_active(u->kick, 0, 0);
	}
}

/*
 * Remove the easy handle from the multi, then keep it for the pool or
 * clean it up: never the other way round (see the top of this file).
 * open: the transfer ends with its HTTP/2 stream, if any, still open.
 * spoilt: the transfer failed inside curl. Such a handle is not pooled:
 * curl 8.14 keeps some failures on the handle, and after a streamed body
 * could not be rewound for a retry (CURLE_SEND_FAIL_REWIND) every later
 * transfer on it failed the same way at once, without a request sent.
 */
static void
transfer_release(struct transfer *x, int open, int spoilt)
{
	struct upstreams	*u = x->u;
	struct sockwatch	*sw;

	xwait_del(&x->wait_conn);
	xwait_del(&x->wait_end);
	/* May close the connection, freeing its watch (x->h2conn then NULL). */
	curl_multi_remove_handle(u->multi, x->eh->e);
	if ((sw = x->h2conn) != NULL) {
		LIST_REMOVE(x, h2_entry);
		x->h2conn = NULL;
		if (open)
			transfer_unqueue_reset(u, sw);
	}
	/* Its connection rests now, unless curl closed it just then. */
	if (x->conn != NULL) {
		x->conn->owner = NULL;
		x->conn = NULL;
	}
	x->eh->x = NULL;
	if (spoilt)
		easy_free(x->eh);
	else if (!x->fat && u->npool < EASY_POOL_MAX)
		u->pool[u->npool++] = x->eh;
	else if (x->fat && u->nfat < EASY_FAT_MAX)
		u->fat[u->nfat++] = x->eh;
	else
		easy_free(x->eh);
	x->eh = NULL;
	transfer_set_paused(x, 0);
	u->running_xfers--;
	metrics_gauge_add(G_TRANSFERS_IN_FLIGHT, -1);
}

/*
 * Headers curl adds by itself unless told not to: Accept when the client
 * sent none, and with a body Expect (the body is already here, nobody needs
 * to wait for a 100) and Content-Type. Every line costs curl a scan per
 * header of its own, so only these. Their number; *size grows by the room
 * the request's lines and these take as a curl_slist.
 */
static size_t
transfer_headers_off(const struct transfer_request *r, const char **off,
    size_t *size)
{
	const struct http_header	*h;
	size_t				 i, noff = 0;

	if (http_headers_get(r->headers, "accept") == NULL)
		off[noff++] = "Accept:";
	if (r->has_body || r->source != NULL) {
		off[noff++] = "Expect:";
		if (http_headers_get(r->headers, "content-type") == NULL)
			off[noff++] = "Content-Type:";
	}
	for (i = 0; i < r->headers->n; i++) {
		h = &r->headers->v[i];
		*size += sizeof (struct curl_slist) + h->namelen + 2 +
		    h->valuelen + 1;
	}
	for (i = 0; i < noff; i++)
		*size += sizeof (struct curl_slist) + strlen(off[i]) + 1;
	return (noff);
}

/*
 * The request's header lines as a curl_slist (the nodes, then the strings)
 * at l, room that transfer_headers_off() measured and that lasts as long as
 * the transfer: curl only reads the list, and curl_slist_append would cost
 * two allocations a line. Returns the end of what it wrote.
 */
static char *
transfer_headers(const struct transfer_request *r, const char **off,
    size_t noff, struct curl_slist *l)
{
	const struct http_header	*h;
	size_t				 i, n, size;
	char				*p;

	n = r->headers->n + noff;
	p = (char *)(l + n);
	for (i = 0; i < n; i++) {
		l[i].data = p;
		l[i].next = i + 1 < n ? &l[i + 1] : NULL;
		if (i < r->headers->n) {
			h = &r->headers->v[i];
			/* "Name;" sends an empty value, "Name:" would drop it. */
			memcpy(p, h->name, h->namelen);
			p += h->namelen;
			*p++ = h->valuelen ? ':' : ';';
			*p++ = ' ';
			memcpy(p, h->value, h->valuelen);
			p += h->valuelen;
			*p++ = '\0';
		} else {
			size = strlen(off[i - r->headers->n]) + 1;
			memcpy(p, off[i - r->headers->n], size);
			p += size;
		}
	}
	return (p);
}

/*
 * A pooled easy handle, or a new one with the options that are the same for
 * every transfer. Pooled handles are not reset: curl_easy_reset() frees
 * and rebuilds every option (allocations included) only for transfer_start
 * to set most of them again, and keeps the send buffer anyway. A transfer
 * with a body takes a handle that has a send buffer already when there is
 * one; one without takes a lean handle first. *fat: the handle has (or
 * will have) a send buffer.
 */
static struct easy *
easy_get(struct upstreams *u, int *fat)
{
	struct easy	*eh;
	CURL		*e;

	if (*fat && u->nfat > 0)
		return (u->fat[--u->nfat]);
	if (u->npool > 0)
		return (u->pool[--u->npool]);
	if (u->nfat > 0) {
		*fat = 1;
		return (u->fat[--u->nfat]);
	}
	if ((eh = calloc(1, sizeof *eh)) == NULL)
		return (NULL);
	if ((eh->e = e = curl_easy_init()) == NULL) {
		free(eh);
		return (NULL);
	}
	eh->set.dns_s = eh->set.httpver = eh->set.maxsize = -2;
	curl_easy_setopt(e, CURLOPT_PRIVATE, eh);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, eh);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, eh);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, eh);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, eh);
	curl_easy_setopt(e, CURLOPT_READDATA, eh);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Upstreams are reached directly: no proxy from the environment
	 * (this also spares curl its getenv calls on every transfer). */
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, transfer_write_cb);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, transfer_header_cb);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, transfer_read_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, transfer_socket_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, transfer_close_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, transfer_prereq_cb);
	return (eh);
}

static void
easy_free(struct easy *eh)
{
	curl_easy_cleanup(eh->e);
	free(eh);
}

/* Set option opt to v unless the handle's last transfer did already. */
#define EASY_SET(eh, field, opt, v) do {				\
	if ((eh)->set.field != (v)) {					\
		curl_easy_setopt((eh)->e, (opt), (v));			\
		(eh)->set.field = (v);					\
	}								\
} while (0)

struct transfer *
transfer_start(struct upstreams *u, const struct transfer_request *r,
    transfer_done_cb cb, void *arg)
{
	const struct upstream_conf	*up = r->up;
	const char			*base = r->url ? r->url : up->url;
	struct transfer			*x;
	struct easy			*eh;
	CURL				*e;
	const char			*off[3], *prefix;
	CURLU				*origin;
	long				 httpver;
	size_t				 noff, size = 0, olen, plen, pathlen;
	int				 plain_get;
	char				*p;

	/*
	 * The origin of the server's URL goes to curl parsed, and the rest
	 * of it (a path prefix) and the request's path as the request
	 * target (no fragment: a client should send none, and curl sent
	 * none either when it had the whole URL to parse).
	 */
	prefix = base + strcspn(base, ":") + 3;		/* "://": config.c */
	prefix += strcspn(prefix, "/");
	olen = prefix - base;
	plen = strlen(prefix);
	pathlen = r->pathlen;
	if ((p = memchr(r->path, '#', pathlen)) != NULL)
		pathlen = p - r->path;
	if ((origin = upstreams_origin(u, base, olen)) == NULL)
		return (NULL);

	/*
	 * One allocation for the transfer and what it sends: its header
	 * lines as curl's list (curl reads them until the end), its target.
	 */
	noff = transfer_headers_off(r, off, &size);
	if (size > SIZE_MAX / 2 || plen + pathlen > SIZE_MAX / 4 ||
	    (x = malloc(sizeof *x + size + plen + pathlen + 2)) == NULL)
		return (NULL);
	memset(x, 0, sizeof *x);
	x->sendhdrs = size ? (struct curl_slist *)(x + 1) : NULL;
	p = transfer_headers(r, off, noff, (struct curl_slist *)(x + 1));
	x->target = p;
	memcpy(p, prefix, plen);
	memcpy(p + plen, r->path, pathlen);
	p += plen + pathlen;
	if (p == x->target)
		*p++ = '/';
	*p = '\0';
	x->u = u;
	x->cb = cb;
	x->arg = arg;
	x->max_size = r->any_size ? UINT64_MAX : up->max_response_size;
	x->stream = r->stream;
	http_headers_init(&x->headers);
	http_headers_init(&x->trailer);
	/* An empty body is sent from the head's buffer, as a GET is. */
	x->fat = (r->has_body && r->bodylen > 0) || r->source != NULL;
	if ((x->eh = eh = easy_get(u, &x->fat)) == NULL)
		goto fail;
	e = eh->e;
	eh->x = x;

	/*
	 * Every option a transfer may change is set here, unless the handle
	 * has it already: it keeps whatever its previous transfer left.
	 */
	curl_easy_setopt(e, CURLOPT_CURLU, origin);
	curl_easy_setopt(e, CURLOPT_REQUEST_TARGET, x->target);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->sendhdrs);
	EASY_SET(eh, maxsize, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)(r->any_size ? 0 : up->max_response_size));
	/* Host names are resolved again after dns_ttl (whole seconds,
	 * rounded up; 0: for every new connection). */
	EASY_SET(eh, dns_s, CURLOPT_DNS_CACHE_TIMEOUT,
	    (long)((up->dns_ttl_ms + 999) / 1000));
	if (strncasecmp(base, "https://", 8) == 0) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER,
		    up->tls_verify ? 1L : 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST,
		    up->tls_verify ? 2L : 0L);
		/* NULL would be no CA file at all, not the default one. */
		curl_easy_setopt(e, CURLOPT_CAINFO,
		    up->ca_file != NULL ? up->ca_file : u->cainfo);
	}
	switch (up->http2) {
	case HTTP2_PRIOR_KNOWLEDGE:
		x->h2 = 1;
		/*
		 * No CURLOPT_PIPEWAIT: libcurl 8.14 shares a connection only
		 * once an answer has come back on it, so a transfer told to
		 * wait would queue behind a slow first answer. Without it a
		 * burst on a new upstream opens a few connections, which
		 * all multiplex from their first answer on.
		 */
		httpver = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
		break;
	case HTTP2_ON:
		httpver = CURL_HTTP_VERSION_2TLS;	/* 1.1 for http:// */
		x->plain_h1 = strncasecmp(base, "http://", 7) == 0;
		x->h2 = !x->plain_h1;
		break;
	default:
		httpver = CURL_HTTP_VERSION_1_1;
		x->plain_h1 = strncasecmp(base, "http://", 7) == 0;
	}
	EASY_SET(eh, httpver, CURLOPT_HTTP_VERSION, httpver);

	/* The method and body, from a plain GET. HTTPGET comes last: it
	 * turns UPLOAD and NOBODY off, and POSTFIELDS, even NULL, makes a
	 * POST. A handle whose last transfer was a plain GET has them. */
	plain_get = r->source == NULL && !r->has_body &&
	    strcmp(r->method, "GET") == 0;
	if (!eh->set.plain_get) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)-1);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)-1);
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	eh->set.plain_get = plain_get;
	if (r->source != NULL) {
		/* The body is sent as it arrives; UPLOAD makes it a PUT
		 * unless told otherwise. */
		x->source = r->source;
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		if (r->source->size >= 0)
			curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
			    (curl_off_t)r->source->size);
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	} else if (strcmp(r->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (strcmp(r->method, "GET") != 0 || r->has_body) {
		if (r->has_body) {
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
			    (curl_off_t)r->bodylen);
			curl_easy_setopt(e, CURLOPT_POSTFIELDS,
			    r->bodylen ? r->body : "");
		}
		if (strcmp(r->method, "POST") != 0 || !r->has_body)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	}

	x->started_us = now_us();
	if (curl_multi_add_handle(u->multi, e) != CURLM_OK)
		goto fail;
	/* Before curl runs it (from the loop): its clocks start now. */
	if (xwait_add(u, x, &x->wait_conn, up->connect_timeout_ms,
	    x->started_us) == -1 || xwait_add(u, x, &x->wait_end,
	    r->timeout_ms ? r->timeout_ms : up->timeout_ms,
	    x->started_us) == -1) {
		xwait_del(&x->wait_conn);
		curl_multi_remove_handle(u->multi, e);
		goto fail;
	}
	u->started++;
	u->running_xfers++;
	metrics_gauge_add(G_TRANSFERS_IN_FLIGHT, 1);
	return (x);
fail:
	if (x->eh != NULL)
		easy_free(x->eh);
	transfer_free(x);
	return (NULL);
}

/* The pause mask for what is still paused. */
static int
transfer_pause_mask(const struct transfer *x)
{
	return ((x->paused ? CURLPAUSE_RECV : 0) |
	    (x->send_paused ? CURLPAUSE_SEND : 0));
}

void
transfer_resume(struct transfer *x)
{
	if (!x->paused)
		return;
	transfer_set_paused(x, 0);
	/* This may run the write callback at once with what curl held. */
	curl_easy_pause(x->eh->e, transfer_pause_mask(x));
}

void
transfer_resume_send(struct transfer *x)
{
	if (!x->send_paused)
		return;
	x->send_paused = 0;
	/* This may run the read callback at once. */
	curl_easy_pause(x->eh->e, transfer_pause_mask(x));
}

static size_t
transfer_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct transfer	*x = ((struct easy *)arg)->x;
	size_t		 n;
	int		 eof = 0;

	if (x->source == NULL)
		return (0);	/* no body to send */
	n = x->source->read(x->arg, buf, size * nitems, &eof);
	if (n > 0 || eof)
		return (n);
	x->send_paused = 1;
	return (CURL_READFUNC_PAUSE);
}

size_t
transfer_abort(struct transfer *x)
{
	size_t	discarded;

	discarded = x->body != NULL ? evbuffer_get_length(x->body) : 0;
	transfer_release(x, 1, 0);
	transfer_free(x);
	return (discarded);
}

static enum transfer_error
transfer_classify(struct transfer *x, CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return (XFER_OK);
	case CURLE_OPERATION_TIMEDOUT:
		/*
		 * connect_timeout ends up here too. Only a transfer that never
		 * had a connection is a connect failure: a reused one has no
		 * connect time, but its request may have been sent, and a
		 * "connect failure" is retried elsewhere in mode proxy.
		 */
		return (x->sending ? XFER_TIMEOUT : XFER_CONNECT);
	case CURLE_COULDNT_CONNECT:
		return (x->no_socket ? XFER_NO_SOCKET : XFER_CONNECT);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
		return (XFER_CONNECT);
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return (XFER_RESET);
	case CURLE_FILESIZE_EXCEEDED:
		return (XFER_TOO_LARGE);
	case CURLE_WRITE_ERROR:
		return (x->too_large ? XFER_TOO_LARGE : XFER_PROTOCOL);
	default:
		return (XFER_PROTOCOL);
	}
}

static void
transfer_done(struct transfer *x, CURLcode rc)
{
	struct transfer_result	 res;
	long			 status = 0;

	memset(&res, 0, sizeof res);
	res.error = transfer_classify(x, rc);
	res.detail = res.error == XFER_NO_SOCKET ? "out of file descriptors" :
	    curl_easy_strerror(rc);
	curl_easy_getinfo(x->eh->e, CURLINFO_RESPONSE_CODE, &status);
	res.status = (int)status;
	res.headers = &x->headers;
	res.trailers = &x->trailer;
	res.body = x->body;
	res.duration_us = now_us() - x->started_us;
	/* What curl ends on its own side while the stream is open; an
	 * upstream's reset or a broken connection leaves none to reset. */
	transfer_release(x, rc == CURLE_OPERATION_TIMEDOUT ||
	    rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED,
	    rc != CURLE_OK);
	/* The callee may move the body out, or take it (res.body = NULL). */
	x->cb(x, &res, x->arg);
	x->body = res.body;
	transfer_free(x);
}

static void
upstreams_check_done(struct upstreams *u)
{
	CURLMsg		*msg;
	struct easy	*eh;
	CURLcode	 rc;
	int		 left;

	while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		if (msg->easy_handle == u->pruner) {
			upstreams_pruned(u);
			continue;
		}
		eh = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&eh);
		if (eh != NULL && eh->x != NULL)
			transfer_done(eh->x, rc);
	}
}
