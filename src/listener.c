/*
 * listener.c: listening sockets, and accepting client connections.
 *
 * When accept(2) fails for want of descriptors (EMFILE, ENFILE) the
 * listener would stay readable and the loop would spin: instead accepting
 * pauses for a moment, and the problem is logged once per episode.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "front.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "util.h"

#define ACCEPT_BACKOFF_MS	100
#define RECHECK_MS		50
#define LISTEN_BACKLOG		1024
/* Sockets on an address held by another process that we look up. */
#define HOLDER_MAX		8

struct listener {
	struct loop			*loop;
	const struct listener_hooks	*hooks;
	void				*arg;
	struct lset			 set;
	char		 what[32];	/* for the logs */
	struct event	*recheck;	/* while paused at max_connections */
};

/* ---- listener sets ------------------------------------------------------- */

static int
addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	return (a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0 &&
	    a->tls == b->tls);
}

static void	lset_retry_cb(evutil_socket_t, short, void *);
static void	listener_recheck_cb(evutil_socket_t, short, void *);

int
lset_init(struct lset *s, struct event_base *base, const struct lset_ops *ops,
    void *arg, const char *what)
{
	memset(s, 0, sizeof *s);
	s->base = base;
	s->ops = ops;
	s->arg = arg;
	s->what = what;
	if ((s->retry = evtimer_new(base, lset_retry_cb, s)) == NULL)
		return (-1);
	return (0);
}

/* Accepting on or off, for every socket of the set. */
static void
lset_enable(struct lset *s, int on)
{
	size_t	i;

	for (i = 0; i < s->n; i++) {
		if (on)
			evconnlistener_enable(s->e[i].el);
		else
			evconnlistener_disable(s->e[i].el);
	}
}

static void
lset_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lset	*s = arg;

	s->backoff = 0;
	if (!s->paused)
		lset_enable(s, 1);
}

/*
 * accept(2) failed. For want of descriptors the socket stays readable and
 * the loop would spin: stop accepting for a moment instead. One log line
 * per episode: an episode ends when accepting has worked for a while.
 */
void
lset_accept_error(struct lset *s, int err)
{
	struct timeval	tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
	uint64_t	now = now_ms();

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warnx("accept failed%s error=\"%s\"", s->what, strerror(err));
		return;
	}
	/* An episode ends with a successful accept (lset_accept_ok) or, where
	 * accepts are not seen (evhttp), after a quiet while. */
	if (!s->episode || now - s->last_error_ms > 4 * ACCEPT_BACKOFF_MS)
		log_warnx("accept failed, pausing%s error=\"%s\"", s->what,
		    strerror(err));
	s->episode = 1;
	s->last_error_ms = now;
	s->backoff = 1;
	lset_enable(s, 0);
	evtimer_add(s->retry, &tv);
}

void
lset_accept_ok(struct lset *s)
{
	s->episode = 0;
}

void
lset_pause(struct lset *s, int paused)
{
	s->paused = paused;
	if (paused)
		lset_enable(s, 0);
	else if (!s->backoff)
		lset_enable(s, 1);
}

/* Same socket address, whatever the tls flag. */
static int
addr_same_socket(const struct listen_addr *a, const struct listen_addr *b)
{
	return (a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0);
}

/*
 * A listening socket on a. With SO_REUSEPORT each worker has a socket of
 * its own on the address and the kernel spreads connections over them.
 * But SO_REUSEPORT would as gladly let a second fanoutd (or anything of
 * the same user) bind the same address, and the kernel would then split
 * the clients between two processes and two configurations. So the first
 * socket of an address the process does not hold yet (first) is bound
 * without SO_REUSEPORT: that bind fails with EADDRINUSE when any other
 * socket holds the address, with SO_REUSEPORT or without. The option is
 * set after the bind and before listen(2): Linux looks at both sockets'
 * flags when the next one binds, so our other workers' sockets, bound
 * with it, join this one. The check is the bind itself, no window
 * between a probe and the real socket. (Once set, a process of the same
 * user that binds with SO_REUSEPORT can still join: a twin fanoutd
 * cannot, as its own first bind fails.)
 */
static int
lset_socket(const struct listen_addr *a, int reuseport, int first)
{
	int	fd, on = 1, saved;

	if ((fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1)
		return (-1);
	/* SO_REUSEADDR: a restart binds despite connections in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == -1)
		goto fail;
	if (a->ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof on) == -1)
		goto fail;
	if (reuseport && !first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT,
	    &on, sizeof on) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->sslen) == -1)
		goto fail;
	if (reuseport && first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT,
	    &on, sizeof on) == -1)
		goto fail;
	if (listen(fd, LISTEN_BACKLOG) == -1)
		goto fail;
	return (fd);
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return (-1);
}

static struct evconnlistener *
lset_bind(struct lset *s, const struct listen_addr *a, int first)
{
	struct evconnlistener	*el;
	int			 fd, saved;

	if ((fd = lset_socket(a, s->reuseport, first)) == -1)
		return (NULL);
	/* No callback yet: the listener starts disabled. Backlog 0: the
	 * socket listens already. */
	if ((el = evconnlistener_new(s->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE,
	    0, fd)) == NULL) {
		saved = errno;
		close(fd);
		errno = saved;
	}
	return (el);
}

/* ---- who holds an address (for the message when a bind fails) ------------ */

/* One line of /proc/net/tcp{,6}: its local address and port, in the
 * kernel's words (each 32-bit word of the address as it lies in memory,
 * printed in hex), its state and its inode. */
static int
holder_parse(const char *line, int v6, unsigned char *addr, unsigned *port,
    unsigned *state, unsigned long *inode)
{
	char		 hex[33], word[9];
	uint32_t	 w;
	size_t		 i, n = v6 ? 4 : 1;

	if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*u %*u "
	    "%lu", hex, port, state, inode) != 4 || strlen(hex) != n * 8)
		return (-1);
	for (i = 0; i < n; i++) {
		memcpy(word, hex + i * 8, 8);
		word[8] = '\0';
		w = (uint32_t)strtoul(word, NULL, 16);
		memcpy(addr + i * 4, &w, 4);
	}
	return (0);
}

/*
 * Would a socket listening on this entry's address hold ours? The same
 * address, or the wildcard of its family; an IPv6 wildcard socket (not
 * v6only, as far as we can tell) holds IPv4 addresses too, and so does a
 * v4-mapped one.
 */
static int
holder_match(const struct listen_addr *a, int v6, const unsigned char *addr)
{
	static const unsigned char	 any[16];
	static const unsigned char	 mapped[12] = { [10] = 0xff, [11] = 0xff };
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	if (a->ss.ss_family == AF_INET) {
		sin = (const struct sockaddr_in *)&a->ss;
		if (!v6)
			return (memcmp(addr, &sin->sin_addr, 4) == 0 ||
			    memcmp(addr, any, 4) == 0);
		return (memcmp(addr, any, 16) == 0 ||
		    (memcmp(addr, mapped, 12) == 0 &&
		    memcmp(addr + 12, &sin->sin_addr, 4) == 0));
	}
	sin6 = (const struct sockaddr_in6 *)&a->ss;
	return (v6 && (memcmp(addr, &sin6->sin6_addr, 16) == 0 ||
	    memcmp(addr, any, 16) == 0));
}

/* The inodes of the listening sockets that hold a's port. */
static size_t
holder_inodes(const struct listen_addr *a, unsigned long *inodes, size_t max)
{
	static const char *const	 files[] = { "/proc/net/tcp",
					    "/proc/net/tcp6" };
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6	*sin6 =
					    (const struct sockaddr_in6 *)&a->ss;
	unsigned char			 addr[16];
	char				 line[512];
	unsigned			 port, state, want;
	unsigned long			 inode;
	size_t				 n = 0, v6;
	FILE				*f;

	want = ntohs(a->ss.ss_family == AF_INET ? sin->sin_port :
	    sin6->sin6_port);
	for (v6 = 0; v6 < 2; v6++) {
		if ((f = fopen(files[v6], "re")) == NULL)
			continue;
		while (n < max && fgets(line, sizeof line, f) != NULL) {
			/* 0A: TCP_LISTEN */
			if (holder_parse(line, v6, addr, &port, &state,
			    &inode) == -1 || port != want || state != 0x0A ||
			    inode == 0 || !holder_match(a, v6, addr))
				continue;
			inodes[n++] = inode;
		}
		fclose(f);
	}
	return (n);
}

/* Whether process pid has a descriptor on one of the sockets. */
static int
holder_has(const char *pid, const unsigned long *inodes, size_t n)
{
	char		 path[PATH_MAX], link[64], want[40];
	struct dirent	*de;
	DIR		*d;
	ssize_t		 len;
	size_t		 i;
	int		 found = 0;

	snprintf(path, sizeof path, "/proc/%s/fd", pid);
	if ((d = opendir(path)) == NULL)
		return (0);	/* gone, or not ours to look at */
	while (!found && (de = readdir(d)) != NULL) {
		if (snprintf(path, sizeof path, "/proc/%s/fd/%s", pid,
		    de->d_name) >= (int)sizeof path ||
		    (len = readlink(path, link, sizeof link - 1)) <= 0)
			continue;
		link[len] = '\0';
		for (i = 0; i < n && !found; i++) {
			snprintf(want, sizeof want, "socket:[%lu]", inodes[i]);
			found = strcmp(link, want) == 0;
		}
	}
	closedir(d);
	return (found);
}

/*
 * Which process holds a (best effort): a listening socket on it in
 * /proc/net/tcp{,6}, then a process with a descriptor for that socket in
 * /proc/PID/fd. 0 with the pid and its command name, or -1: not found, or
 * not permitted (another user's processes).
 */
static int
lset_holder(const struct listen_addr *a, long *pid, char *comm, size_t len)
{
	unsigned long	 inodes[HOLDER_MAX];
	char		 path[PATH_MAX];
	struct dirent	*de;
	DIR		*d;
	FILE		*f;
	size_t		 n;
	int		 found = 0;

	if ((n = holder_inodes(a, inodes, HOLDER_MAX)) == 0 ||
	    (d = opendir("/proc")) == NULL)
		return (-1);
	while (!found && (de = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)de->d_name[0]) ||
		    strtol(de->d_name, NULL, 10) == (long)getpid())
			continue;
		found = holder_has(de->d_name, inodes, n);
	}
	if (found) {
		*pid = strtol(de->d_name, NULL, 10);
		snprintf(comm, len, "?");
		snprintf(path, sizeof path, "/proc/%s/comm", de->d_name);
		if ((f = fopen(path, "re")) != NULL) {
			if (fgets(comm, len, f) != NULL)
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
	}
	closedir(d);
	return (found ? 0 : -1);
}

/*
 * Say why a can not be listened on. An address in use gets its holder
 * named when it can be found. " (admin)" reads as part of the address,
 * " worker=N" as a key at the end.
 */
static void
lset_bind_error(struct lset *s, const struct listen_addr *a, int err)
{
	const char	*pre = s->what[0] == ' ' && s->what[1] == '(' ?
			    s->what : "";
	const char	*post = *pre != '\0' ? "" : s->what;
	char		 comm[64];
	long		 pid;

	if (err != EADDRINUSE)
		log_error("cannot listen on %s%s%s error=\"%s\"", a->text, pre,
		    post, strerror(err));
	else if (lset_holder(a, &pid, comm, sizeof comm) == 0)
		log_error("cannot listen on %s%s: address in use by %ld (%s)%s",
		    a->text, pre, pid, comm, post);
	else
		log_error("cannot listen on %s%s: address already in use%s",
		    a->text, pre, post);
}

int
lset_prepare(struct lset *s, const struct listen_addr *addrs, size_t n,
    struct lset_change *ch)
{
	size_t	i, j;
	int	first;

	memset(ch, 0, sizeof *ch);
	ch->n = n;
	for (i = 0; i < n; i++) {
		ch->next[i].addr = addrs[i];
		for (j = 0; j < s->n; j++) {
			if (!ch->kept[j] && addr_equal(&s->e[j].addr, &addrs[i])) {
				ch->next[i].el = s->e[j].el;
				ch->next[i].handle = s->e[j].handle;
				ch->kept[j] = 1;
				break;
			}
		}
		if (ch->next[i].el != NULL)
			continue;
		/* The first to bind an address the process does not hold
		 * (TLS or not) makes sure nobody else does (lset_socket). */
		first = s->first;
		for (j = 0; j < s->n && first; j++)
			first = !addr_same_socket(&s->e[j].addr, &addrs[i]);
		if ((ch->next[i].el = lset_bind(s, &addrs[i], first)) == NULL) {
			lset_bind_error(s, &addrs[i], errno);
			goto fail;
		}
		ch->next[i].handle = s->ops->attach(s->arg, ch->next[i].el,
		    &addrs[i]);
		if (ch->next[i].handle == NULL) {
			log_error("cannot listen on %s%s", addrs[i].text, s->what);
			evconnlistener_free(ch->next[i].el);
			ch->next[i].el = NULL;
			goto fail;
		}
		ch->fresh[i] = 1;
	}
	return (0);
fail:
	lset_abort(s, ch);
	return (-1);
}

void
lset_commit(struct lset *s, struct lset_change *ch)
{
	size_t	i;

	for (i = 0; i < s->n; i++) {
		if (ch->kept[i])
			continue;
		log_info("no longer listening on %s%s%s", s->e[i].addr.text,
		    s->e[i].addr.tls ? " tls" : "", s->what);
		s->ops->detach(s->arg, s->e[i].handle, s->e[i].el);
	}
	for (i = 0; i < ch->n; i++) {
		if (ch->fresh[i])
			log_info("listening on %s%s%s", ch->next[i].addr.text,
			    ch->next[i].addr.tls ? " tls" : "", s->what);
	}
	memcpy(s->e, ch->next, sizeof s->e);
	s->n = ch->n;
	memset(ch, 0, sizeof *ch);
}

void
lset_abort(struct lset *s, struct lset_change *ch)
{
	size_t	i;

	/* Close only what the preparation bound. */
	for (i = 0; i < ch->n; i++) {
		if (ch->fresh[i] && ch->next[i].el != NULL)
			s->ops->detach(s->arg, ch->next[i].handle,
			    ch->next[i].el);
	}
	memset(ch, 0, sizeof *ch);
}

int
lset_update(struct lset *s, const struct listen_addr *addrs, size_t n)
{
	struct lset_change	ch;

	if (lset_prepare(s, addrs, n, &ch) == -1)
		return (-1);
	lset_commit(s, &ch);
	return (0);
}

void
lset_clear(struct lset *s)
{
	size_t	i;

	for (i = 0; i < s->n; i++)
		s->ops->detach(s->arg, s->e[i].handle, s->e[i].el);
	s->n = 0;
	if (s->retry != NULL)
		event_free(s->retry);
	s->retry = NULL;
}

/* ---- client listeners ---------------------------------------------------- */

/* What an accept callback is handed: the listener, and how to speak. */
struct listener_port {
	struct listener	*ls;
	int		 tls;
};

static void
listener_accept_cb(struct evconnlistener *el, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener_port	*lp = arg;
	struct listener		*ls = lp->ls;

	lset_accept_ok(&ls->set);
	front_accept(ls->loop, fd, sa, salen, lp->tls);
	if (ls->hooks->full(ls->arg) && !ls->set.paused) {
		log_info("max_connections reached, accepting paused%s "
		    "connections=%u", ls->what, ls->loop->nconns);
		listener_pause(ls);
		/* The others too, before their listeners take more; one
		 * may still slip in on each meanwhile. */
		ls->hooks->paused(ls->arg);
	}
}

static void
listener_error_cb(struct evconnlistener *el, void *arg)
{
	struct listener_port	*lp = arg;

	lset_accept_error(&lp->ls->set, EVUTIL_SOCKET_ERROR());
}

static void *
listener_attach(void *arg, struct evconnlistener *el,
    const struct listen_addr *addr)
{
	struct listener		*ls = arg;
	struct listener_port	*lp;

	if ((lp = calloc(1, sizeof *lp)) == NULL)
		return (NULL);
	lp->ls = ls;
	lp->tls = addr->tls;
	evconnlistener_set_error_cb(el, listener_error_cb);
	evconnlistener_set_cb(el, listener_accept_cb, lp);
	if (ls->set.paused || ls->set.backoff)
		evconnlistener_disable(el);
	return (lp);
}

static void
listener_detach(void *arg, void *handle, struct evconnlistener *el)
{
	evconnlistener_free(el);
	free(handle);
}

static const struct lset_ops listener_ops = {
	listener_attach, listener_detach
};

struct listener *
listener_new(struct loop *loop, unsigned id, const struct config *conf,
    const struct listener_hooks *hooks, void *arg)
{
	struct listener	*ls;

	if ((ls = calloc(1, sizeof *ls)) == NULL)
		return (NULL);
	ls->loop = loop;
	ls->hooks = hooks;
	ls->arg = arg;
	snprintf(ls->what, sizeof ls->what, " worker=%u", id);
	if (lset_init(&ls->set, loop->base, &listener_ops, ls, ls->what) == -1) {
		free(ls);
		return (NULL);
	}
	ls->set.reuseport = 1;
	/* Workers bind in order, the first one first (server_start, and
	 * server_reload's preparation). */
	ls->set.first = id == 0;
	if ((ls->recheck = evtimer_new(loop->base, listener_recheck_cb, ls)) ==
	    NULL || lset_update(&ls->set, conf->listen, conf->nlisten) == -1) {
		listener_free(ls);
		return (NULL);
	}
	return (ls);
}

struct lset *
listener_set(struct listener *ls)
{
	return (&ls->set);
}

void
listener_free(struct listener *ls)
{
	if (ls == NULL)
		return;
	lset_clear(&ls->set);
	if (ls->recheck != NULL)
		event_free(ls->recheck);
	free(ls);
}

/*
 * Paused at max_connections, which counts every worker's connections: a
 * close on another worker does not reach us, so look again every so often.
 */
static void
listener_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*ls = arg;
	struct timeval	 tv = { 0, RECHECK_MS * 1000 };

	if (!ls->set.paused)
		return;
	if (!ls->hooks->full(ls->arg))
		listener_resume(ls);
	else
		evtimer_add(ls->recheck, &tv);
}

void
listener_pause(struct listener *ls)
{
	struct timeval	tv = { 0, RECHECK_MS * 1000 };

	lset_pause(&ls->set, 1);
	evtimer_add(ls->recheck, &tv);
}

void
listener_resume(struct listener *ls)
{
	evtimer_del(ls->recheck);
	lset_pause(&ls->set, 0);
}

int
listener_paused(const struct listener *ls)
{
	return (ls->set.paused);
}
