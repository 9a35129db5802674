/**
 * The namespace test harness shared by every module's integration tests (test-jar of
 * netns-helper): {@link warren.netns.testing.TestNetwork} and the JUnit 5
 * {@link warren.netns.testing.NetnsExtension}. It never touches the root namespace's network
 * configuration: every interface is created inside a test namespace.
 */
package warren.netns.testing;
