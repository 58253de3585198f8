// SPDX-License-Identifier: GPL-2.0
/*
 * stall - a test module whose init does not return for a long time, to prove
 * that the pipeline notices a guest command that hangs (insmod of a module
 * that blocks) and cleans up after it.
 */
#define pr_fmt(fmt) "stall: " fmt

#include <linux/delay.h>
#include <linux/module.h>

static unsigned int seconds = 600;
module_param(seconds, uint, 0444);
MODULE_PARM_DESC(seconds, "how long init sleeps (default 600)");

static int __init stall_init(void)
{
	pr_info("sleeping seconds=%u\n", seconds);
	msleep_interruptible(seconds * 1000);
	return 0;
}

static void __exit stall_exit(void)
{
}

module_init(stall_init);
module_exit(stall_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Blocks in init: a hang for the pipeline's fault tests");
