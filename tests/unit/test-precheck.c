/* The prechecks' verdicts that need no network (svm/precheck): round-trip thresholds, VLAN
 * IDs, MTU mismatch, the CPU baseline, the report's text and JSON, and a host's facts through
 * the peer link's INFO fields. The probes themselves run for real in tests/integ/precheck-*. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svm/precheck/precheck.h"

static struct svm_pc_host a, b;
static struct svm_pc_ctx c;
static struct svm_pc_report r;

static void host(struct svm_pc_host *h, const char *name, const char *addr, const char *ifc)
{
  memset(h, 0, sizeof *h);
  snprintf(h->name, sizeof h->name, "%s", name);
  h->has_mig = h->mig_found = h->mig.up = true;
  snprintf(h->mig.name, sizeof h->mig.name, "%s", ifc);
  snprintf(h->mig.addr, sizeof h->mig.addr, "%s", addr);
  inet_pton(AF_INET, addr, &h->mig.in);
  h->mig.prefix = 24;
  h->mig.mask.s_addr = htonl(0xffffff00);
  h->mig.mtu = 1500;
  h->mig.vlan = -1;
  h->mig_port = 7200;
  h->cpu = (char *)"fpu cx8 cmov mmx fxsr sse sse2 syscall lm cx16 lahf_lm popcnt sse4_1 "
                   "sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave aes";
}

static int setup(void **state)
{
  (void)state;
  host(&a, "hostA", "198.51.100.1", "mig0.100");
  host(&b, "hostB", "198.51.100.2", "mig0.200");
  memset(&c, 0, sizeof c);
  c.local = &a;
  c.peer = &b;
  c.net_ok = true;
  memset(&r, 0, sizeof r);
  return 0;
}

static void expect(unsigned i, enum svm_pc_level level, const char *check, const char *found,
                   const char *fix)
{
  assert_true(r.n > i);
  assert_int_equal(r.items[i].level, level);
  assert_string_equal(r.items[i].check, check);
  assert_string_equal(r.items[i].found, found);
  assert_string_equal(r.items[i].fix, fix);
}

static void test_rtt(void **state)
{
  (void)state;
  c.rtt_us = 80000;
  svm_pc_check_rtt(&c, &r);
  expect(0, SVM_PC_OK, "rtt", "round trip 80.00 ms to 198.51.100.2 (limit 150 ms)", "");
  c.rtt_us = 120000;
  svm_pc_check_rtt(&c, &r);
  expect(1, SVM_PC_WARNING, "rtt", "round trip 120.00 ms to 198.51.100.2: close to the 150 ms "
         "limit of live moves", "expect long switchovers; a closer host or a faster migration "
         "link keeps it under 100 ms");
  c.rtt_us = 200000;
  svm_pc_check_rtt(&c, &r);
  expect(2, SVM_PC_ERROR, "rtt", "round trip 200.00 ms to 198.51.100.2: over the 150 ms limit "
         "of live moves", "a live move needs a round trip under 150 ms: move the VM cold, or "
         "choose a closer host or a faster migration link");
  c.rtt_us = 0;   /* not measured: no verdict */
  svm_pc_check_rtt(&c, &r);
  assert_int_equal(r.n, 3);
}

static void test_vlan(void **state)
{
  (void)state;
  a.mig.vlan = 100;
  b.mig.vlan = 200;
  svm_pc_check_vlan(&c, &r);
  expect(0, SVM_PC_ERROR, "vlan", "VLAN IDs differ: host hostA mig0.100 VLAN 100, host hostB "
         "mig0.200 VLAN 200", "put both migration interfaces on the same VLAN (e.g. VLAN 100 on "
         "host hostB as on host hostA)");
  b.mig.vlan = 100;
  svm_pc_check_vlan(&c, &r);
  expect(1, SVM_PC_OK, "vlan", "both migration interfaces VLAN 100", "");
}

static void test_mtu_mismatch(void **state)
{
  (void)state;
  a.mig.mtu = 9000;
  svm_pc_check_mtu(&c, &r);
  expect(0, SVM_PC_ERROR, "mtu", "MTU mismatch: host hostA mig0.100 MTU 9000, host hostB "
         "mig0.200 MTU 1500", "set the same MTU on both migration interfaces: ip link set dev "
         "mig0.200 mtu 9000 on host hostB (with jumbo frames on every switch between), or MTU "
         "1500 on host hostA's mig0.100");
}

static void test_cpu(void **state)
{
  (void)state;
  svm_pc_check_cpu(&c, &r);
  expect(0, SVM_PC_OK, "cpu", "host hostB's CPU has every feature of host hostA's; shared "
         "baseline x86-64-v3 (25 features)", "");
  b.cpu = (char *)"fpu cx8 cmov mmx fxsr sse sse2 syscall lm cx16 lahf_lm popcnt sse4_1 "
                  "sse4_2 ssse3 avx";
  svm_pc_check_cpu(&c, &r);
  expect(1, SVM_PC_WARNING, "cpu", "host hostB's CPU lacks 9 feature(s) of host hostA's: avx2 "
         "bmi1 bmi2 f16c fma abm movbe xsave aes; shared baseline x86-64-v2 (16 features)",
         "a cold move is not affected; for a compute move start the VM with a CPU model of the "
         "shared baseline (x86-64-v2, e.g. QEMU -cpu x86-64-v2)");
}

static void test_route(void **state)
{
  (void)state;
  inet_pton(AF_INET, "203.0.113.2", &b.mig.in);
  snprintf(b.mig.addr, sizeof b.mig.addr, "203.0.113.2");
  snprintf(b.gw, sizeof b.gw, "203.0.113.254");
  svm_pc_check_route(&c, &r);
  expect(0, SVM_PC_ERROR, "route", "host hostA: migration peer 203.0.113.2 is not on "
         "mig0.100's subnet 198.51.100.1/24 and no migration gateway is set", "start svmd on "
         "host hostA with --migration-gateway GW, GW being the router of its migration network "
         "on mig0.100");
  assert_false(c.net_ok);
}

static void test_report_and_msg(void **state)
{
  struct svm_peer_msg *m = malloc(sizeof *m);
  struct svm_pc_host back;
  char *out = NULL;

  (void)state;
  svm_pc_add(&r, "tls", SVM_PC_OK, NULL, "peer \"x\"");
  svm_pc_add(&r, "vlan", SVM_PC_ERROR, "same VLAN", "differ");
  assert_true(svm_pc_failed(&r));
  assert_int_equal(svm_pc_format(&r, "vm1", "h:1", false, &out), 0);
  assert_string_equal(out, "ok      tls        peer \"x\"\n"
                           "error   vlan       differ; fix: same VLAN\n"
                           "precheck of VM vm1 to h:1: 1 error(s), 0 warning(s)\n");
  free(out);
  assert_int_equal(svm_pc_format(&r, "vm1", "h:1", true, &out), 0);
  assert_string_equal(out, "{\"vm\": \"vm1\", \"host\": \"h:1\", \"result\": \"error\", "
                      "\"errors\": 1, \"warnings\": 0, \"checks\": [{\"check\": \"tls\", "
                      "\"status\": \"ok\", \"found\": \"peer \\\"x\\\"\", \"fix\": \"\"}, "
                      "{\"check\": \"vlan\", \"status\": \"error\", \"found\": \"differ\", "
                      "\"fix\": \"same VLAN\"}]}");
  free(out);

  /* a host through INFO fields, the CPU flags in pieces */
  assert_non_null(m);
  char *flags = malloc(3000);
  assert_non_null(flags);
  flags[0] = '\0';
  for (int i = 0; i < 300; i++)
    sprintf(flags + strlen(flags), "%sf%d", i ? " " : "", i);
  a.cpu = flags;
  a.mig.vlan = 42;
  a.dup = 1;
  snprintf(a.dup_mac, sizeof a.dup_mac, "02:00:00:00:00:01");
  a.ds_found = true;
  a.ds_free = 12345;
  svm_peer_msg_init(m, SVM_PEER_OK);
  assert_int_equal(svm_pc_host_to_msg(&a, m), 0);
  assert_int_equal(svm_pc_host_from_msg(&back, m), 0);
  assert_string_equal(back.cpu, flags);
  assert_string_equal(back.name, "hostA");
  assert_string_equal(back.mig.name, "mig0.100");
  assert_string_equal(back.mig.addr, "198.51.100.1");
  assert_int_equal(back.mig.prefix, 24);
  assert_int_equal(back.mig.mask.s_addr, htonl(0xffffff00));
  assert_int_equal(back.mig.vlan, 42);
  assert_int_equal(back.mig.mtu, 1500);
  assert_int_equal(back.mig_port, 7200);
  assert_true(back.mig.up && back.has_mig && back.mig_found);
  assert_int_equal(back.dup, 1);
  assert_string_equal(back.dup_mac, "02:00:00:00:00:01");
  assert_true(back.ds_found);
  assert_int_equal(back.ds_free, 12345);
  svm_pc_host_clear(&back);
  free(flags);
  free(m);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup(test_rtt, setup),
    cmocka_unit_test_setup(test_vlan, setup),
    cmocka_unit_test_setup(test_mtu_mismatch, setup),
    cmocka_unit_test_setup(test_cpu, setup),
    cmocka_unit_test_setup(test_route, setup),
    cmocka_unit_test_setup(test_report_and_msg, setup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
