/*
 * bench/poll_cost.c - what one of libcurl's zero-timeout polls costs here.
 *
 *   cc -O2 -o /tmp/poll_cost bench/poll_cost.c && /tmp/poll_cost [CALLS]
 *
 * libcurl 8.14 calls poll(2) on a connection's socket twice per transfer:
 * before reusing it (is it still alive?) and after the answer (is more data
 * pending?). Both ask one socket with a timeout of 0, as this does, CALLS
 * times (2000000) on a connected, idle loopback TCP socket, and prints the
 * user and system CPU per call (getrusage): the syscall's own cost on this
 * machine, which bench/README.md (issue 22) multiplies by the polls per
 * request. Loopback only; no process is started.
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static double
us(const struct timeval *a, const struct timeval *b)
{
	return ((b->tv_sec - a->tv_sec) * 1e6 + (b->tv_usec - a->tv_usec));
}

int
main(int argc, char *argv[])
{
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof sin;
	struct rusage		 r0, r1;
	struct pollfd		 pfd;
	long			 i, n = argc > 1 ? atol(argv[1]) : 2000000;
	int			 l, c, a;

	if (n <= 0)
		errx(1, "usage: poll_cost [CALLS]");
	if ((l = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    (c = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		err(1, "socket");
	sin.sin_family = AF_INET;
	sin.sin_port = 0;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    listen(l, 1) == -1 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) == -1)
		err(1, "listen");
	if (connect(c, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    (a = accept(l, NULL, NULL)) == -1)
		err(1, "connect");

	/* What libcurl asks (lib/cf-socket.c, SOCKET_READABLE). */
	pfd.fd = c;
	pfd.events = POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND;
	getrusage(RUSAGE_SELF, &r0);
	for (i = 0; i < n; i++) {
		if (poll(&pfd, 1, 0) != 0)
			errx(1, "the idle socket is readable");
	}
	getrusage(RUSAGE_SELF, &r1);
	printf("poll(1 socket, timeout 0): %.3f us user + %.3f us sys per call "
	    "(%ld calls)\n", us(&r0.ru_utime, &r1.ru_utime) / n,
	    us(&r0.ru_stime, &r1.ru_stime) / n, n);
	close(a);
	close(c);
	close(l);
	return (0);
}
