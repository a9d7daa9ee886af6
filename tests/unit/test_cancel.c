/*
 * test_cancel.c: the cancel cell and its tree.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cancel.h"

struct probe {
	int			 calls;
	enum cancel_reason	 reason;
	int			 order;
	struct cancel		*detach;	/* detach this one when called */
	struct cancel		*parent_seen;
	int			 parent_was_set;
};

static int	sequence;

static void
probe_cb(struct cancel *c, enum cancel_reason reason, void *arg)
{
	struct probe	*p = arg;

	p->calls++;
	p->reason = reason;
	p->order = ++sequence;
	if (p->detach != NULL)
		cancel_detach(p->detach);
	if (c->parent != NULL)
		p->parent_was_set = cancel_is_set(c->parent);
}

static void
test_flips_once(void **state)
{
	struct cancel	c;
	struct probe	p = { 0 };

	cancel_init(&c, NULL, probe_cb, &p);
	assert_false(cancel_is_set(&c));
	assert_int_equal(cancel_reason_of(&c), CANCEL_NONE);
	assert_int_equal(cancel_flip(&c, CANCEL_DEADLINE), 1);
	assert_true(cancel_is_set(&c));
	assert_int_equal(cancel_flip(&c, CANCEL_CLIENT_CLOSED), 0);
	assert_int_equal(cancel_flip(&c, CANCEL_DEADLINE), 0);
	assert_int_equal(p.calls, 1);
	/* The first reason stays. */
	assert_int_equal(cancel_reason_of(&c), CANCEL_DEADLINE);
	assert_int_equal(p.reason, CANCEL_DEADLINE);
}

static void
test_none_is_not_a_reason(void **state)
{
	struct cancel	c;

	cancel_init(&c, NULL, NULL, NULL);
	assert_int_equal(cancel_flip(&c, CANCEL_NONE), 0);
	assert_false(cancel_is_set(&c));
}

static void
test_parent_flips_children_first(void **state)
{
	struct cancel	parent, a, b;
	struct probe	pp = { 0 }, pa = { 0 }, pb = { 0 };

	sequence = 0;
	cancel_init(&parent, NULL, probe_cb, &pp);
	cancel_init(&a, &parent, probe_cb, &pa);
	cancel_init(&b, &parent, probe_cb, &pb);
	assert_int_equal(cancel_flip(&parent, CANCEL_CLIENT_CLOSED), 1);
	assert_int_equal(pa.calls, 1);
	assert_int_equal(pb.calls, 1);
	assert_int_equal(pp.calls, 1);
	assert_int_equal(pa.reason, CANCEL_CLIENT_CLOSED);
	assert_int_equal(pb.reason, CANCEL_CLIENT_CLOSED);
	/* Children's callbacks ran before the parent's, and saw it set. */
	assert_true(pa.order < pp.order);
	assert_true(pb.order < pp.order);
	assert_true(pa.parent_was_set);
}

static void
test_child_does_not_flip_parent(void **state)
{
	struct cancel	parent, a, b;
	struct probe	pp = { 0 }, pa = { 0 }, pb = { 0 };

	cancel_init(&parent, NULL, probe_cb, &pp);
	cancel_init(&a, &parent, probe_cb, &pa);
	cancel_init(&b, &parent, probe_cb, &pb);
	assert_int_equal(cancel_flip(&a, CANCEL_SUPERSEDED), 1);
	assert_false(cancel_is_set(&parent));
	assert_false(cancel_is_set(&b));
	assert_int_equal(pp.calls, 0);
	/* The parent later flips the rest, not the flipped one again. */
	cancel_flip(&parent, CANCEL_DEADLINE);
	assert_int_equal(pa.calls, 1);
	assert_int_equal(pa.reason, CANCEL_SUPERSEDED);
	assert_int_equal(pb.calls, 1);
	assert_int_equal(pb.reason, CANCEL_DEADLINE);
}

static void
test_grandchildren(void **state)
{
	struct cancel	root, mid, leaf;
	struct probe	pr = { 0 }, pm = { 0 }, pl = { 0 };

	cancel_init(&root, NULL, probe_cb, &pr);
	cancel_init(&mid, &root, probe_cb, &pm);
	cancel_init(&leaf, &mid, probe_cb, &pl);
	cancel_flip(&root, CANCEL_SHUTDOWN);
	assert_int_equal(pl.calls, 1);
	assert_int_equal(pl.reason, CANCEL_SHUTDOWN);
	assert_int_equal(pm.calls, 1);
	assert_int_equal(pr.calls, 1);
}

static void
test_detached_child_is_not_flipped(void **state)
{
	struct cancel	parent, a;
	struct probe	pp = { 0 }, pa = { 0 };

	cancel_init(&parent, NULL, probe_cb, &pp);
	cancel_init(&a, &parent, probe_cb, &pa);
	cancel_detach(&a);
	cancel_flip(&parent, CANCEL_DEADLINE);
	assert_int_equal(pa.calls, 0);
	assert_false(cancel_is_set(&a));
}

static void
test_callback_may_detach_a_sibling(void **state)
{
	struct cancel	parent, a, b, c;
	struct probe	pp = { 0 }, pa = { 0 }, pb = { 0 }, pc = { 0 };

	cancel_init(&parent, NULL, probe_cb, &pp);
	cancel_init(&a, &parent, probe_cb, &pa);
	cancel_init(&b, &parent, probe_cb, &pb);
	cancel_init(&c, &parent, probe_cb, &pc);
	pa.detach = &a;		/* a detaches itself while being flipped */
	cancel_flip(&parent, CANCEL_CLIENT_CLOSED);
	assert_int_equal(pa.calls, 1);
	assert_int_equal(pb.calls, 1);
	assert_int_equal(pc.calls, 1);
	assert_null(a.parent);
}

static void
test_reason_names(void **state)
{
	assert_string_equal(cancel_reason_name(CANCEL_CLIENT_CLOSED),
	    "client_closed");
	assert_string_equal(cancel_reason_name(CANCEL_DEADLINE), "deadline");
	assert_string_equal(cancel_reason_name(CANCEL_SHUTDOWN), "shutdown");
	assert_string_equal(cancel_reason_name(CANCEL_SUPERSEDED), "superseded");
	assert_string_equal(cancel_reason_name(CANCEL_NREASONS), "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flips_once),
		cmocka_unit_test(test_none_is_not_a_reason),
		cmocka_unit_test(test_parent_flips_children_first),
		cmocka_unit_test(test_child_does_not_flip_parent),
		cmocka_unit_test(test_grandchildren),
		cmocka_unit_test(test_detached_child_is_not_flipped),
		cmocka_unit_test(test_callback_may_detach_a_sibling),
		cmocka_unit_test(test_reason_names),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
