/*
 * h1.h: HTTP/1.x on a client connection (RFC 9112), one request at a
 * time: keep-alive, pipelining, lingering close, chunked streaming.
 */
#ifndef FANOUTD_H1_H
#define FANOUTD_H1_H

struct config;
struct conn;

/* Once per process: llhttp's callbacks. */
void	h1_init(void);
/* Speak HTTP/1.x on c from now on, with the limits of conf until the first
 * request takes the current configuration; what is in its input is the
 * start of that request. 0, or -1 (out of memory: the caller closes). */
int	h1_start(struct conn *, struct config *);

#endif
