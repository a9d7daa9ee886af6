/*
 * server.h: the process: start-up, signals, reload and the drain.
 *
 * The main thread owns signals, the admin listener, reloads and the drain;
 * it runs no client traffic. Client traffic runs on the workers
 * (worker.h), each a thread with an event loop of its own, which the main
 * thread talks to only through worker_call().
 */
#ifndef FANOUTD_SERVER_H
#define FANOUTD_SERVER_H

struct config;

/* 0 / -1 with the reason logged; the caller exits 2 on -1. */
int	server_start(struct config *, unsigned long nofile);
/* Runs until the drain is over. */
void	server_run(void);
void	server_free(void);

#endif
