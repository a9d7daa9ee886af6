/*
 * log.c: the error log, in the shape of relayd's log.c. log_warn and fatal
 * append strerror(errno); the x variants do not.
 *
 * Each line starts with a timestamp, or, when stderr is journald's stream,
 * with a syslog priority ("<3>") that journald takes off and files the
 * line under: it stamps the time itself.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum log_level	log_level = LOG_LEVEL_INFO;
static int		log_journal;	/* stderr goes to journald */

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_prio[] = {
	[LOG_LEVEL_ERROR] = 3,
	[LOG_LEVEL_WARN] = 4,
	[LOG_LEVEL_INFO] = 6,
	[LOG_LEVEL_DEBUG] = 7,
};

/*
 * systemd sets JOURNAL_STREAM to "DEV:INO" of the stream it connects
 * stdout and stderr to (sd_journal_stream_fd(3), systemd.exec(5)). A
 * child with its stderr sent elsewhere inherits the variable, so it
 * counts only when stderr is that very stream.
 */
void
log_init(void)
{
	const char		*v = getenv("JOURNAL_STREAM");
	unsigned long long	 dev, ino;
	struct stat		 st;
	char			 c;

	log_journal = v != NULL &&
	    sscanf(v, "%llu:%llu%c", &dev, &ino, &c) == 2 &&
	    fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/* Where a line starts: "<6>", or "2026-12-07T04:15:02.123Z ". */
static int
log_prefix(char *buf, size_t len, enum log_level level)
{
	struct timespec	ts;
	struct tm	tm;
	size_t		n;

	if (log_journal)
		return (snprintf(buf, len, "<%d>", level_prio[level]));
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	return (n + snprintf(buf + n, len - n, ".%03ldZ ",
	    ts.tv_nsec / 1000000));
}

void
log_set_level(enum log_level level)
{
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int
log_enabled(enum log_level level)
{
	return (level <= __atomic_load_n(&log_level, __ATOMIC_RELAXED));
}

static void
log_vwrite(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	char	 line[2048];
	int	 n, saved = errno;

	n = log_prefix(line, sizeof line, level);
	n += snprintf(line + n, sizeof line - n, "%s ", level_names[level]);
	n += vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (n >= (int)sizeof line - 1)
		n = sizeof line - 2;
	if (with_errno)
		n += snprintf(line + n, sizeof line - n, " error=\"%s\"",
		    strerror(saved));
	if (n >= (int)sizeof line - 1)
		n = sizeof line - 2;
	line[n++] = '\n';
	/* One write(2) per line, so lines from threads never interleave. */
	if (write(STDERR_FILENO, line, n) == -1) {
		/* nowhere left to complain */
	}
	errno = saved;
}

#define LOG_FN(fn, level, with_errno)				\
void								\
fn(const char *fmt, ...)					\
{								\
	va_list	ap;						\
								\
	if (!log_enabled(level))				\
		return;						\
	va_start(ap, fmt);					\
	log_vwrite(level, with_errno, fmt, ap);			\
	va_end(ap);						\
}

LOG_FN(log_error, LOG_LEVEL_ERROR, 0)
LOG_FN(log_warn, LOG_LEVEL_WARN, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)

void
log_text(enum log_level level, const char *text)
{
	const char	*nl;
	size_t		 len;

	while (*text != '\0') {
		if ((nl = strchr(text, '\n')) != NULL)
			len = (size_t)(nl - text);
		else
			len = strlen(text);
		if (log_journal)
			fprintf(stderr, "<%d>", level_prio[level]);
		fprintf(stderr, "%.*s\n", (int)len, text);
		text += len + (nl != NULL);
	}
	fflush(stderr);
}

void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 1, fmt, ap);
	va_end(ap);
	exit(2);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(2);
}
