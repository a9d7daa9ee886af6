/*
 * h2.h: HTTP/2 on a client connection (RFC 9113): one nghttp2 server
 * session per connection, one request per stream.
 *
 * Each stream is a struct front to its request, with its own cancel cell:
 * a client's RST_STREAM cancels that request alone, the connection going
 * cancels them all.
 */
#ifndef FANOUTD_H2_H
#define FANOUTD_H2_H

struct config;
struct conn;

/* Speak HTTP/2 on c from now on, with the limits of conf; what is in its
 * input (the preface, with prior knowledge) is taken in at once. 0, or -1
 * (the session could not be set up: the caller closes). */
int	h2_start(struct conn *, struct config *);

#endif
