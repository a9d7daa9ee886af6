/*
 * front.h: client connections: HTTP/1.1 in over a bufferevent, parsed by
 * llhttp, keep-alive and pipelining, timeouts and limits.
 *
 * Reading stays enabled while a request is with the upstreams, so that a
 * client's FIN or RST is seen at once and cancels the request.
 */
#ifndef FANOUTD_FRONT_H
#define FANOUTD_FRONT_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/util.h>

struct worker;
struct conn;
struct evbuffer;
struct request;

enum conn_after {
	CONN_KEEP,		/* keep alive if the client wants it */
	CONN_CLOSE,		/* close once written */
	CONN_CLOSE_LINGER,	/* unread input may follow: linger, then close */
};

void	front_init(void);
void	front_accept(struct worker *, evutil_socket_t, struct sockaddr *,
	    socklen_t);

/*
 * Queue a response for the connection's current request and detach it.
 * headers holds whole "Name: value\r\n" lines; content_length is sent as
 * it is (HEAD answers pass the upstream's) or, when -1, as body's length.
 * Returns the bytes queued.
 */
size_t	conn_respond(struct conn *, int status, struct evbuffer *headers,
	    struct evbuffer *body, long long content_length, enum conn_after);

/*
 * A streamed answer (mode proxy): the head now, the body as it comes. With
 * content_length -1 the body is sent chunked (HTTP/1.1) or delimited by
 * the close (HTTP/1.0). These only queue bytes and never close the
 * connection, so they are safe inside curl's callbacks; the socket is
 * written from the loop. When the output passes a high mark the caller
 * should pause its source; resume(arg) runs once it drains below a low one.
 */
void	conn_stream_begin(struct conn *, int status, struct evbuffer *headers,
	    long long content_length, int head_only,
	    void (*resume)(void *), void *arg);
void	conn_stream_data(struct conn *, const char *, size_t);
int	conn_stream_full(struct conn *);
/* The whole body was sent: detach the request. Returns the bytes queued. */
size_t	conn_stream_end(struct conn *);
/*
 * The body cannot be completed. If nothing of the answer has reached the
 * client yet, it is taken back: returns 0 and the caller answers as if no
 * stream had begun. Otherwise the connection is closed after what is
 * queued (a cut answer is better than a wrong one), the request detached,
 * and -1 returned. *bytes: what the client was given. Not from inside curl.
 */
int	conn_stream_abort(struct conn *, size_t *bytes);

/* A streamed request body was taken in: read the client again. Safe
 * inside curl's callbacks (it only arms events). */
void	conn_body_resume(struct conn *);

/* The request ended without an answer on this connection: if it is
 * still the connection's, close the connection. */
void	conn_abandon(struct conn *, struct request *);

/* SIGTERM: close idle connections, mark the rest to close when done. */
void	front_drain(struct worker *);
/* Drain over: cancel in-flight requests (shutdown), close the rest. */
void	front_stop(struct worker *);

#endif
