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

/* SIGTERM: close idle connections, mark the rest to close when done. */
void	front_drain(struct worker *);
/* Drain over: cancel in-flight requests (shutdown), close the rest. */
void	front_stop(struct worker *);

#endif
