/*
 * h2.h: the HTTP/2 front end (RFC 9113), one nghttp2 server session per
 * client connection, one request per stream.
 *
 * front.c owns the socket (plain or TLS) and hands the session its input;
 * the session writes its frames into the connection's output. Each stream
 * is a struct front to its request, with its own cancel cell: a client's
 * RST_STREAM cancels that request alone, the connection going cancels
 * them all.
 */
#ifndef FANOUTD_H2_H
#define FANOUTD_H2_H

#include "cancel.h"

struct conn;
struct config;
struct evbuffer;
struct h2_session;

struct h2_session	*h2_session_new(struct conn *, struct config *,
			    const char *peer, int tls);
/* Take all of in. Never closes the connection itself (conn_finish). */
void			 h2_session_input(struct h2_session *, struct evbuffer *);
/* The connection's output is empty: more frames may go. */
void			 h2_session_output_drained(struct h2_session *);
/* SIGTERM: GOAWAY, no new streams; close once the last one ends. */
void			 h2_session_drain(struct h2_session *);
/* Drain over: every stream's request is cancelled (shutdown). */
void			 h2_session_stop(struct h2_session *);
/* The connection is closing: cut every stream's request loose (why). */
void			 h2_session_gone(struct h2_session *, enum cancel_reason);
void			 h2_session_free(struct h2_session *);

#endif
