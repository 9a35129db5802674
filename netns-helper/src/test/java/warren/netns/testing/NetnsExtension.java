package warren.netns.testing;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;

/**
 * JUnit 5: gives a test method a fresh {@link TestNetwork} parameter and closes it after the test,
 * pass or fail; on failure it first prints the namespaces' addresses, routes and sockets. Before
 * the first test of a class it sweeps namespaces left by crashed earlier runs. Without root (or
 * without iproute2) the test is skipped, never passed.
 */
public final class NetnsExtension implements ParameterResolver, AfterEachCallback, BeforeAllCallback {
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(NetnsExtension.class);

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        if (TestNetwork.available()) {
            for (String gone : TestNetwork.sweep()) {
                System.err.println("removed namespace left by a crashed run: " + gone);
            }
        }
    }

    @Override
    public boolean supportsParameter(ParameterContext p, ExtensionContext e) {
        return p.getParameter().getType() == TestNetwork.class;
    }

    @Override
    public Object resolveParameter(ParameterContext p, ExtensionContext e) {
        Assumptions.assumeTrue(TestNetwork.available(), "needs root and iproute2 to create network namespaces");
        TestNetwork net = new TestNetwork();
        e.getStore(NS).put("net", net);
        return net;
    }

    @Override
    public void afterEach(ExtensionContext context) {
        TestNetwork net = context.getStore(NS).remove("net", TestNetwork.class);
        if (net == null) {
            return;
        }
        if (context.getExecutionException().isPresent()) {
            System.err.println("test failed; namespace state:\n" + net.dump());
        }
        net.close();
    }
}
