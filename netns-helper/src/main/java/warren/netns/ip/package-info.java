/**
 * Named network namespaces for programs (the demo, the benchmarks) made with ip(8): unique names
 * per process, removed on exit and on Ctrl-C. The daemons never use this (no {@code ip} in
 * production code); tests use the harness in the test-jar ({@code warren.netns.testing}).
 */
package warren.netns.ip;
