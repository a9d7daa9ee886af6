/*
 * listener.h: the client listening sockets of one worker.
 */
#ifndef FANOUTD_LISTENER_H
#define FANOUTD_LISTENER_H

struct worker;
struct config;
struct listen_addr;
struct evconnlistener;
struct event_base;

/* Bind every [server] listen address. NULL with the reason logged. */
struct listener	*listener_new(struct worker *, const struct config *);
void		 listener_free(struct listener *);
/* Stop or resume accepting (max_connections); the sockets stay bound. */
void		 listener_pause(struct listener *);
void		 listener_resume(struct listener *);
int		 listener_paused(const struct listener *);

/* Bind one address for a listener of our own making (admin too). */
struct evconnlistener *listener_bind(struct event_base *,
		    const struct listen_addr *, void (*)(struct evconnlistener *,
		    int, struct sockaddr *, int, void *), void *);

#endif
