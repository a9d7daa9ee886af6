/*
 * fuzz_request.c: bytes from a client, through the real front end (llhttp,
 * limits, routing, fan-out to upstreams that refuse) to the answer.
 *
 * The input is written into one end of a socketpair whose other end is
 * handed to front_accept(); the loop runs until nothing moves, then the
 * client end closes and the loop runs until the connection is gone.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "accesslog.h"
#include "config.h"
#include "front.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "upstream.h"

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Upstreams on a port nobody listens on: every leg fails fast. */
static const char fuzz_config[] =
	"[server]\n"
	"listen = 127.0.0.1:1\n"
	"max_header_size = 4k\n"
	"max_body_size = 8k\n"
	"access_log = off\n"
	"log_level = error\n"
	"[upstream \"a\"]\n"
	"url = http://127.0.0.1:9\n"
	"connect_timeout = 50ms\n"
	"[upstream \"b\"]\n"
	"url = http://127.0.0.1:9/b\n"
	"connect_timeout = 50ms\n"
	"[route \"proxy\"]\n"
	"match = /\n"
	"upstreams = a, b\n"
	"deadline = 100ms\n"
	"[route \"all\"]\n"
	"match = /all\n"
	"mode = all\n"
	"upstreams = a, b\n"
	"partial = allow\n"
	"deadline = 100ms\n"
	"[route \"strip\"]\n"
	"match = /strip/\n"
	"strip_prefix = yes\n"
	"methods = GET, POST\n"
	"mode = hedge\n"
	"upstreams = a, b\n"
	"deadline = 100ms\n";

static struct loop	 loop;		/* what a worker would hand down */
unsigned long		 answers;	/* reads that returned data */

static void
fuzz_conn_counted(void *arg)
{
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config		*conf;
	struct event_base	*base;
	char			*errors = NULL;

	if ((conf = config_load_string("fuzz.ini", fuzz_config, &errors)) == NULL)
		fatalx("fuzz config: %s", errors);
	log_set_level(LOG_LEVEL_ERROR);
	/* As in main(): a write to a client that has gone must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	metrics_init();
	front_init();
	accesslog_open("off");
	if ((base = event_base_new()) == NULL || loop_init(&loop, base) == -1 ||
	    (loop.upstreams = upstreams_new(base, 16)) == NULL)
		fatalx("cannot set up the loop");
	loop.conf = conf;
	loop.conn_opened = loop.conn_gone = fuzz_conn_counted;
	return (0);
}

/* Run the loop until a pass moves nothing, at most max passes. */
static void
spin(int fd, int max)
{
	char	buf[16384];
	int	i, idle = 0;
	ssize_t	n;

	for (i = 0; i < max; i++) {
		event_base_loop(loop.base, EVLOOP_NONBLOCK);
		if (fd != -1 && (n = read(fd, buf, sizeof buf)) > 0) {
			if (getenv("FUZZ_DEBUG") != NULL)
				fprintf(stderr, "%.*s\n", (int)n, buf);
			answers++;
			idle = 0;
		} else if (++idle >= 3 &&
		    metrics_gauge_get(G_REQUESTS_IN_FLIGHT) == 0 &&
		    (fd != -1 || loop.nconns == 0))
			break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct sockaddr_un	sun;
	int			sv[2], flags;
	size_t			off = 0;
	ssize_t			n;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return (0);
	flags = fcntl(sv[1], F_GETFL);
	fcntl(sv[1], F_SETFL, flags | O_NONBLOCK);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	front_accept(&loop, sv[0], (struct sockaddr *)&sun, sizeof sun, 0);
#ifdef FUZZ_PREFIX
	/* The input goes after this: see fuzz_h2.c. */
	if (write(sv[1], FUZZ_PREFIX, sizeof FUZZ_PREFIX - 1) !=
	    sizeof FUZZ_PREFIX - 1)
		goto done;
#endif

	/* Feed it in pieces, letting the loop run between them. */
	while (off < len) {
		n = write(sv[1], data + off, len - off > 4096 ? 4096 : len - off);
		if (n <= 0)
			break;
		off += n;
		spin(sv[1], 50);
	}
	spin(sv[1], 200);
#ifdef FUZZ_PREFIX
done:
#endif
	close(sv[1]);
	spin(-1, 1000);
	return (0);
}
