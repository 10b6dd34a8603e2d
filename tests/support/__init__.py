"""Helpers shared by the tests, the benchmarks and the chaos harness, one module per
thing they hold. Nothing here imports pytest when imported, so `bench` and `chaos`
use them without it: real redis-servers (`redis_server`), a cluster and its Volcano
Jobs (`kube`), bounded waits (`waits`), stream events built for tests (`events`),
what a missing dependency means under CI (`ci`), and where the repository is
(`paths`)."""
