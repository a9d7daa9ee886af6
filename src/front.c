/*
 * front.c: the front end's door. A client connection is accepted here and
 * its protocol chosen, in this one place: HTTP/2 when TLS agreed on "h2"
 * (ALPN), or when the first bytes are the HTTP/2 preface (prior
 * knowledge, RFC 9113 3.3); HTTP/1.x otherwise. Until then the connection
 * belongs to the chooser below, which waits for the handshake or for
 * enough bytes to tell, within header_timeout.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "config.h"
#include "conn.h"
#include "front.h"
#include "h1.h"
#include "h2.h"
#include "log.h"
#include "loop.h"

/* What an HTTP/2 client sends first (RFC 9113 3.4). */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN	(sizeof h2_preface - 1)

struct chooser {
	struct conn	*c;
	struct config	*conf;		/* a reference: as at the accept */
};

static const struct conn_proto	chooser_proto;

static void	chooser_free(void *);

/* 1: the HTTP/2 preface; 0: not it; -1: too few bytes yet to tell. */
static int
preface(struct evbuffer *in)
{
	unsigned char	*p;
	size_t		 len = evbuffer_get_length(in);

	if (len > H2_PREFACE_LEN)
		len = H2_PREFACE_LEN;
	if ((p = evbuffer_pullup(in, (ssize_t)len)) == NULL ||
	    memcmp(p, h2_preface, len) != 0)
		return (0);
	return (len == H2_PREFACE_LEN ? 1 : -1);
}

/* From now on the connection speaks h2 (or HTTP/1.x). */
static void
choose(struct chooser *ch, int h2)
{
	struct conn	*c = ch->c;

	if ((h2 ? h2_start(c, ch->conf) : h1_start(c, ch->conf)) == -1) {
		log_warnx("cannot start %s client=%s", h2 ? "an HTTP/2 session" :
		    "HTTP/1", conn_peer(c));
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;		/* ch goes with the connection */
	}
	/* The connection is the protocol's now. */
	chooser_free(ch);
}

static void
chooser_ready(void *p, const unsigned char *alpn, unsigned len)
{
	struct chooser	*ch = p;

	if (len == 2 && memcmp(alpn, "h2", 2) == 0 && ch->conf->http2)
		choose(ch, 1);
}

static void
chooser_input(void *p)
{
	struct chooser	*ch = p;
	int		 h2 = 0;

	if (ch->conf->http2 && (h2 = preface(conn_in(ch->c))) == -1)
		return;		/* wait for the rest of it */
	choose(ch, h2);
}

static void
chooser_written(void *p, int done)
{
}

static void
chooser_eof(void *p, int reset)
{
	struct chooser	*ch = p;

	conn_close(ch->c, CANCEL_CLIENT_CLOSED);
}

/* header_timeout with not even a protocol to show for it. */
static void
chooser_timeout(void *p)
{
	struct chooser	*ch = p;

	conn_close(ch->c, CANCEL_CLIENT_CLOSED);
}

static void
chooser_kick(void *p)
{
}

/* Nothing has come, not even waiting in the socket: nothing to finish.
 * Bytes that did come are read, and answered as a drain answers. */
static void
chooser_drain(void *p)
{
	struct chooser	*ch = p;

	if (conn_quiet(ch->c))
		conn_close(ch->c, CANCEL_SHUTDOWN);
}

static void
chooser_stop(void *p)
{
	struct chooser	*ch = p;

	conn_close(ch->c, CANCEL_SHUTDOWN);
}

static void
chooser_gone(void *p, enum cancel_reason why)
{
}

static void
chooser_free(void *p)
{
	struct chooser	*ch = p;

	config_unref(ch->conf);
	free(ch);
}

static const struct conn_proto chooser_proto = {
	chooser_ready,
	chooser_input,
	chooser_written,
	chooser_eof,
	chooser_timeout,
	chooser_kick,
	chooser_drain,
	chooser_stop,
	chooser_gone,
	chooser_free,
};

void
front_accept(struct loop *l, evutil_socket_t fd, struct sockaddr *sa,
    socklen_t salen, int tls)
{
	struct chooser	*ch;
	struct conn	*c;

	if ((ch = calloc(1, sizeof *ch)) == NULL) {
		log_warn("accept: out of memory");
		close(fd);
		return;
	}
	ch->conf = config_ref(l->conf);
	if ((c = conn_new(l, fd, sa, salen, tls, ch->conf->tls_ctx)) == NULL) {
		chooser_free(ch);
		return;
	}
	ch->c = c;
	conn_set_proto(c, &chooser_proto, ch);
	/* The first request must arrive within header_timeout of the
	 * accept, whatever protocol it turns out to be in. */
	conn_timer(c, ch->conf->header_timeout_ms);
}

void
front_init(void)
{
	h1_init();
}
