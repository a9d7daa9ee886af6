/*
 * front.h: the front end's door: a client connection accepted, and its
 * protocol (h1.c, h2.c) chosen.
 */
#ifndef FANOUTD_FRONT_H
#define FANOUTD_FRONT_H

#include <sys/socket.h>

#include <event2/util.h>

struct loop;

/* Once per process. */
void	front_init(void);
/* A client connection on loop l; tls: a TLS listener's. */
void	front_accept(struct loop *l, evutil_socket_t, struct sockaddr *,
	    socklen_t, int tls);

#endif
