/*
 * conn.h: one client connection's transport, plain or TLS: its socket
 * events, input and output buffers, one timer, a deferred kick, and the
 * close. It names no protocol: the protocol on it (front.c chooses; h1.c
 * or h2.c) installs a table of operations and is called through it only.
 *
 * Reading stays enabled while a request is with the upstreams, so that a
 * client's FIN or RST is seen at once and cancels the request; a protocol
 * turns it off only to hold a client back (conn_reading).
 *
 * Lifetime: conn_close() runs the protocol's gone() (cut every request
 * loose), releases the socket at once and frees the rest from the loop's
 * graveyard, so a caller still on the stack may look at the connection
 * (conn_closed()) after it closed it. Nothing here closes a connection
 * from inside conn_write(): a failed write closes it from the loop.
 */
#ifndef FANOUTD_CONN_H
#define FANOUTD_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "cancel.h"

struct conn;
struct evbuffer;
struct loop;
struct ssl_ctx_st;

/*
 * What the connection tells its protocol (p: the protocol's own state).
 * Every one but free() may close the connection.
 *
 * ready:   the TLS handshake is done; alpn (len bytes) was agreed, or NULL
 * input:   bytes arrived in conn_in()
 * written: output went to the socket; done when none is left
 * eof:     the client's FIN (reset 0), or an RST or read error (reset 1);
 *          reading is off by now
 * timeout: the timer set with conn_timer() expired
 * kick:    conn_kick() asked to be called back from the loop
 * drain:   SIGTERM: finish what is under way, take nothing new
 * stop:    the drain is over: cancel what is in flight (shutdown)
 * gone:    the connection is closing: cut every request loose (why)
 * free:    the protocol's state may go (from the graveyard)
 */
struct conn_proto {
	void	(*ready)(void *p, const unsigned char *alpn, unsigned len);
	void	(*input)(void *p);
	void	(*written)(void *p, int done);
	void	(*eof)(void *p, int reset);
	void	(*timeout)(void *p);
	void	(*kick)(void *p);
	void	(*drain)(void *p);
	void	(*stop)(void *p);
	void	(*gone)(void *p, enum cancel_reason);
	void	(*free)(void *p);
};

/* A new connection on loop l, registered in l->conns; NULL on failure
 * (the socket closed). tls: handshake with ctx first. */
struct conn	*conn_new(struct loop *l, evutil_socket_t fd, struct sockaddr *,
		    socklen_t, int tls, struct ssl_ctx_st *ctx);
/* Who speaks on the connection from now on. */
void		 conn_set_proto(struct conn *, const struct conn_proto *, void *);

struct loop	*conn_loop(const struct conn *);
const char	*conn_peer(const struct conn *);
unsigned long long conn_id(const struct conn *);
int		 conn_tls(const struct conn *);
int		 conn_closed(const struct conn *);
struct evbuffer	*conn_in(struct conn *);
struct evbuffer	*conn_out(struct conn *);

/* Read from the socket, or not (a client to hold back). */
void		 conn_reading(struct conn *, int on);
/*
 * Write what the socket takes now; the rest goes on EV_WRITE, and the
 * protocol hears of it through written(). 1 when nothing is left, 0 when
 * some waits, -1 when the write failed (the connection closes from the
 * loop). *sent (when not NULL): how much the socket, or OpenSSL, took.
 */
int		 conn_write(struct conn *, size_t *sent);
/* Output was queued: write it from the loop, later in this pass (what the
 * socket does not take then waits for EV_WRITE; TLS: the bufferevent's). */
void		 conn_want_write(struct conn *);
/* Throw away the output not written yet. */
void		 conn_discard_output(struct conn *);
/* Arm the one timer for ms (0: disarm); timeout() when it expires. */
void		 conn_timer(struct conn *, uint64_t ms);
/* Call the protocol's kick() from the loop (never from this call). */
void		 conn_kick(struct conn *);
/* No more output from us (a lingering close: the input is still read). */
void		 conn_shutdown_write(struct conn *);
/* Nothing has arrived, not even unread in the socket. */
int		 conn_quiet(struct conn *);
/* Close once the output is written; or at once (now). From the loop. */
void		 conn_finish(struct conn *, int now);
void		 conn_close(struct conn *, enum cancel_reason);

/* Every connection of a loop: SIGTERM's drain, and when it is over. */
void		 conn_drain_all(struct loop *);
void		 conn_stop_all(struct loop *);

#endif
