/*
 * conn.c: a client connection's transport (see conn.h).
 *
 * Plain sockets get their own read and write events, not a bufferevent:
 * that would cost a FIONREAD ioctl per read and an epoll_ctl pair per
 * answer. One read per readiness keeps the loop fair between connections;
 * answers are written at once with writev and left to a write event only
 * when the socket is full. No read watermark is used: a watermark, once
 * reached, would hide the client's EOF.
 *
 * TLS goes through a bufferevent_openssl, its callbacks deferred to the
 * loop: a write queued from inside curl's callbacks must not run into an
 * error callback (and a close) right there.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

struct conn {
	TAILQ_ENTRY(conn)	 entry;		/* loop->conns */
	struct loop		*loop;
	struct grave		 grave;		/* loop_defer_free() */
	const struct conn_proto	*proto;
	void			*p;		/* the protocol's state */
	int			 fd;
	struct bufferevent	*bev;		/* TLS: OpenSSL does the I/O */
	struct event		*rev;		/* EV_READ, while reading */
	struct event		*wev;		/* EV_WRITE, while output waits */
	struct event		*kick;
	/* Lazy: a connection sets it on every request, cleared when the head
	 * is in, the keep-alive wait when the answer is out (util.h). */
	struct lazy_timer	 timer;
	struct evbuffer		*in;
	struct evbuffer		*out;
	char			 peer[64];
	unsigned long long	 id;
	unsigned		 tls:1;
	unsigned		 tls_ready:1;	/* handshake done */
	unsigned		 finishing:1;	/* close once the output is out */
	unsigned		 broken:1;	/* a write failed: close from the loop */
	unsigned		 closed:1;
};

static unsigned long long	conn_ids;	/* atomic */

static void	conn_read_cb(evutil_socket_t, short, void *);
static void	conn_write_cb(evutil_socket_t, short, void *);
static void	conn_kick_cb(evutil_socket_t, short, void *);
static void	conn_timer_cb(evutil_socket_t, short, void *);
static void	conn_bev_read_cb(struct bufferevent *, void *);
static void	conn_bev_write_cb(struct bufferevent *, void *);
static void	conn_bev_event_cb(struct bufferevent *, short, void *);

/* The socket, its events and buffers; safe on a half-built connection. */
static void
conn_release(struct conn *c)
{
	struct event	**evs[] = { &c->rev, &c->wev, &c->kick, &c->timer.ev };
	size_t		  i;

	for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
		if (*evs[i] != NULL)
			event_free(*evs[i]);
		*evs[i] = NULL;
	}
	if (c->bev != NULL) {
		/* Its buffers, the SSL object and the socket go with it. */
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->in = c->out = NULL;
		c->fd = -1;
	}
	if (c->in != NULL)
		evbuffer_free(c->in);
	if (c->out != NULL)
		evbuffer_free(c->out);
	c->in = c->out = NULL;
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
}

static void
conn_free(void *arg)
{
	struct conn	*c = arg;

	if (c->proto != NULL && c->proto->free != NULL)
		c->proto->free(c->p);
	free(c);
}

struct conn *
conn_new(struct loop *l, evutil_socket_t fd, struct sockaddr *sa,
    socklen_t salen, int tls, struct ssl_ctx_st *ctx)
{
	struct conn	*c;
	SSL		*ssl = NULL;
	int		 one = 1, ok;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		log_warn("accept: out of memory");
		close(fd);
		return (NULL);
	}
	c->loop = l;
	c->id = __atomic_add_fetch(&conn_ids, 1, __ATOMIC_RELAXED);
	if (getnameinfo(sa, salen, c->peer, sizeof c->peer, NULL, 0,
	    NI_NUMERICHOST) != 0)
		snprintf(c->peer, sizeof c->peer, "unknown");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	evutil_make_socket_nonblocking(fd);
	c->fd = fd;
	c->tls = tls != 0;
	c->kick = event_new(l->base, -1, 0, conn_kick_cb, c);
	c->timer.ev = evtimer_new(l->base, conn_timer_cb, c);
	if (c->tls) {
		if (ctx != NULL && (ssl = SSL_new(ctx)) != NULL)
			c->bev = bufferevent_openssl_socket_new(l->base, fd, ssl,
			    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE |
			    BEV_OPT_DEFER_CALLBACKS);
		if (c->bev == NULL) {
			if (ssl != NULL)
				SSL_free(ssl);
		} else {
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
			bufferevent_setcb(c->bev, conn_bev_read_cb,
			    conn_bev_write_cb, conn_bev_event_cb, c);
			c->in = bufferevent_get_input(c->bev);
			c->out = bufferevent_get_output(c->bev);
		}
		ok = c->bev != NULL &&
		    bufferevent_enable(c->bev, EV_READ | EV_WRITE) == 0;
	} else {
		c->rev = event_new(l->base, fd, EV_READ | EV_PERSIST,
		    conn_read_cb, c);
		c->wev = event_new(l->base, fd, EV_WRITE | EV_PERSIST,
		    conn_write_cb, c);
		c->in = evbuffer_new();
		c->out = evbuffer_new();
		ok = c->rev != NULL && c->wev != NULL && c->in != NULL &&
		    c->out != NULL && event_add(c->rev, NULL) == 0;
	}
	if (!ok || c->kick == NULL || c->timer.ev == NULL) {
		log_warnx("accept: cannot set up connection from %s", c->peer);
		conn_release(c);
		free(c);
		return (NULL);
	}
	TAILQ_INSERT_TAIL(&l->conns, c, entry);
	l->nconns++;
	l->conn_opened(l->owner);
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, 1);
	metrics_counter_add(C_CONNECTIONS_TOTAL, 1);
	log_debug("connection open conn=%llu client=%s", c->id, c->peer);
	return (c);
}

void
conn_set_proto(struct conn *c, const struct conn_proto *proto, void *p)
{
	c->proto = proto;
	c->p = p;
}

struct loop *
conn_loop(const struct conn *c)
{
	return (c->loop);
}

const char *
conn_peer(const struct conn *c)
{
	return (c->peer);
}

unsigned long long
conn_id(const struct conn *c)
{
	return (c->id);
}

int
conn_tls(const struct conn *c)
{
	return (c->tls);
}

int
conn_closed(const struct conn *c)
{
	return (c->closed);
}

struct evbuffer *
conn_in(struct conn *c)
{
	return (c->in);
}

struct evbuffer *
conn_out(struct conn *c)
{
	return (c->out);
}

/*
 * Tear down. The protocol cuts its requests loose first and is told why;
 * then the socket goes, and the struct itself after the current callback.
 */
void
conn_close(struct conn *c, enum cancel_reason why)
{
	struct loop	*l = c->loop;

	if (c->closed)
		return;
	c->closed = 1;
	if (c->proto != NULL)
		c->proto->gone(c->p, why);
	/* Counted out before the close: whoever sees the close and asks
	 * /metrics must not find the connection still there. */
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, -1);
	conn_release(c);
	TAILQ_REMOVE(&l->conns, c, entry);
	l->nconns--;
	loop_defer_free(l, &c->grave, conn_free, c);
	l->conn_gone(l->owner);
}

void
conn_reading(struct conn *c, int on)
{
	if (c->closed)
		return;
	if (c->bev != NULL) {
		if (on)
			bufferevent_enable(c->bev, EV_READ);
		else
			bufferevent_disable(c->bev, EV_READ);
	} else if (on && !event_pending(c->rev, EV_READ, NULL))
		event_add(c->rev, NULL);
	else if (!on)
		event_del(c->rev);
}

/*
 * Output is queued: have it written, once the callback that queued it is
 * over, in this same pass of the loop. The socket almost always takes it:
 * no EPOLLOUT is asked for (an epoll_ctl each way and a pass of the loop
 * per answer), and what else is queued meanwhile (a small answer's head,
 * body and end, each from a curl callback) goes in the same writev. Only
 * what the socket did not take waits for EV_WRITE (conn_write). Pending
 * or active already: nothing to do. A bufferevent writes on its own.
 */
void
conn_want_write(struct conn *c)
{
	if (c->closed || c->bev != NULL)
		return;
	if (!event_pending(c->wev, EV_WRITE, NULL))
		event_active(c->wev, EV_WRITE, 1);
}

int
conn_write(struct conn *c, size_t *sent)
{
	size_t	queued;
	int	n = 0;

	if (sent != NULL)
		*sent = 0;
	if (c->closed || c->broken)
		return (-1);
	queued = evbuffer_get_length(c->out);
	if (c->bev != NULL) {
		/* OpenSSL writes from the loop; whatever is queued counts as
		 * given, and the write callback says when all is out. */
		if (sent != NULL)
			*sent = queued;
	} else if (queued > 0) {
		n = evbuffer_write(c->out, c->fd);
		if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR) {
			log_debug("client write failed conn=%llu client=%s "
			    "error=\"%s\"", c->id, c->peer, strerror(errno));
			c->broken = 1;
			event_active(c->kick, EV_TIMEOUT, 0);
			return (-1);
		}
		if (n > 0 && sent != NULL)
			*sent = (size_t)n;
	}
	if (evbuffer_get_length(c->out) == 0) {
		if (c->wev != NULL)
			event_del(c->wev);
		return (1);
	}
	/* The socket is full: now wait until it is writable. */
	if (c->bev == NULL && !event_pending(c->wev, EV_WRITE, NULL))
		event_add(c->wev, NULL);
	return (0);
}

void
conn_discard_output(struct conn *c)
{
	if (c->out != NULL)
		evbuffer_drain(c->out, evbuffer_get_length(c->out));
	if (c->wev != NULL)
		event_del(c->wev);
}

void
conn_timer(struct conn *c, uint64_t ms)
{
	uint64_t	now;

	if (c->closed)
		return;
	if (ms == 0)
		lazy_timer_clear(&c->timer);
	else {
		now = now_us();
		lazy_timer_set(&c->timer, now + ms * 1000, now);
	}
}

void
conn_kick(struct conn *c)
{
	if (!c->closed)
		event_active(c->kick, EV_TIMEOUT, 0);
}

void
conn_shutdown_write(struct conn *c)
{
	if (c->fd != -1)
		shutdown(c->fd, SHUT_WR);
}

int
conn_quiet(struct conn *c)
{
	char	peek;

	return (evbuffer_get_length(c->in) == 0 &&
	    recv(c->fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK));
}

void
conn_finish(struct conn *c, int now)
{
	if (c->closed)
		return;
	c->finishing = 1;
	if (now)
		c->broken = 1;
	/* From the loop: whoever asks may be deep in a callback. */
	event_active(c->kick, EV_TIMEOUT, 0);
}

/* Some or all of the output went out (done: all of it). */
static void
conn_written(struct conn *c, int done)
{
	if (done && c->finishing) {
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	c->proto->written(c->p, done);
}

/* One read per readiness: the loop stays fair between connections. */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn		*c = arg;
	ssize_t			 n;

	n = recv(fd, c->loop->rbuf, LOOP_RBUF_SIZE, 0);
	if (n > 0) {
		if (evbuffer_add(c->in, c->loop->rbuf, n) == -1) {
			conn_close(c, CANCEL_CLIENT_CLOSED);
			return;
		}
		c->proto->input(c->p);
	} else if (n == 0) {
		conn_reading(c, 0);
		c->proto->eof(c->p, 0);
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		conn_reading(c, 0);
		c->proto->eof(c->p, 1);
	}
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;
	int		 done;

	if ((done = conn_write(c, NULL)) == -1)
		return;
	conn_written(c, done);
}

static void
conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	if (c->broken || (c->finishing && evbuffer_get_length(c->out) == 0)) {
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	c->proto->kick(c->p);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	if (lazy_timer_fired(&c->timer))
		c->proto->timeout(c->p);
}

/* ---- TLS: the bufferevent's callbacks ------------------------------------ */

static void
conn_bev_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;

	if (!c->closed && evbuffer_get_length(c->in) > 0)
		c->proto->input(c->p);
}

static void
conn_bev_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;

	/* Called when the output has gone down to nothing. */
	if (!c->closed && conn_write(c, NULL) == 1)
		conn_written(c, 1);
}

static void
conn_bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn		*c = arg;
	const unsigned char	*alpn;
	unsigned int		 len;
	unsigned long		 e;
	char			 why[256];

	if (c->closed)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		c->tls_ready = 1;
		metrics_labelled_add(L_TLS_HANDSHAKES, TLS_OK, 1);
		SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(bev), &alpn,
		    &len);
		log_debug("tls handshake done conn=%llu client=%s alpn=%.*s",
		    c->id, c->peer, (int)len, len ? (const char *)alpn : "-");
		c->proto->ready(c->p, len ? alpn : NULL, len);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (!c->tls_ready) {
		/* Scanners and broken clients: counted, logged quietly. */
		metrics_labelled_add(L_TLS_HANDSHAKES, TLS_ERROR, 1);
		e = bufferevent_get_openssl_error(bev);
		if (e != 0)
			ERR_error_string_n(e, why, sizeof why);
		else
			snprintf(why, sizeof why, "%s", (what & BEV_EVENT_EOF) ?
			    "connection closed" : strerror(errno));
		log_debug("tls handshake failed conn=%llu client=%s "
		    "error=\"%s\"", c->id, c->peer, why);
		ERR_clear_error();
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	ERR_clear_error();
	conn_reading(c, 0);
	c->proto->eof(c->p, (what & BEV_EVENT_ERROR) != 0);
}

/* ---- all of a loop's connections ------------------------------------------ */

/* Tell every connection of l: the drain begins (stop 0), or is over. A
 * connection may close itself meanwhile, hence the saved next. */
static void
conn_tell_all(struct loop *l, int stop)
{
	struct conn	*c, *next;

	for (c = TAILQ_FIRST(&l->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (stop)
			c->proto->stop(c->p);
		else
			c->proto->drain(c->p);
	}
}

void
conn_drain_all(struct loop *l)
{
	conn_tell_all(l, 0);
}

void
conn_stop_all(struct loop *l)
{
	conn_tell_all(l, 1);
}
