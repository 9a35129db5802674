package warren.daemon.audit;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class JsonLineTest {
    @Test
    void escapesAndOrdersFields() {
        String s = new JsonLine().put("a", "q\"b\\s\n\u0001é").put("n", 42L).put("t", true)
                .put("x", (String) null).putBase64("m", new byte[] {1, 2, 3})
                .merge(new JsonLine().put("inner", 1L)).put("o", new JsonLine().put("k", "v")).toString();
        assertEquals("{\"a\":\"q\\\"b\\\\s\\n\\u0001é\",\"n\":42,\"t\":true,\"x\":null,\"m\":\"AQID\",\"inner\":1,"
                + "\"o\":{\"k\":\"v\"}}", s);
        assertEquals("{}", new JsonLine().merge(new JsonLine()).toString());
        assertEquals("{\"d\":null}", new JsonLine().put("d", Double.NaN).toString());
    }
}
