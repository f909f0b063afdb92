package local.replicator;

import java.net.URI;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerExtensionsValidatorCallback;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallback;

/**
 * The broker side of MSK IAM authentication, for the test broker: accepts an OAUTHBEARER token
 * only if it is a base64url SigV4-presigned {@code kafka-cluster:Connect} URL for
 * {@code kafka.<region>.amazonaws.com}, signed with the configured key, not expired. The
 * session lasts until the token expires, so clients must re-authenticate with a fresh one.
 *
 * <p>An independent check of the services' signer: written from the SigV4 specification, not
 * from their code. JAAS options: accessKeyId, secretAccessKey, region, sessionToken (optional).
 */
public class MskIamTokenValidator implements AuthenticateCallbackHandler {
    private static final DateTimeFormatter AMZ_DATE =
        DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC);
    private String accessKeyId;
    private String secretAccessKey;
    private String region;
    private String sessionToken;

    @Override
    public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> entries) {
        Map<String, ?> options = entries.get(0).getOptions();
        accessKeyId = (String) options.get("accessKeyId");
        secretAccessKey = (String) options.get("secretAccessKey");
        region = (String) options.get("region");
        sessionToken = (String) options.get("sessionToken");
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
        for (Callback callback : callbacks) {
            if (callback instanceof OAuthBearerValidatorCallback validation) {
                try {
                    validation.token(validate(validation.tokenValue()));
                } catch (Exception e) {
                    System.err.println("MskIamTokenValidator: rejected: " + e.getMessage());
                    validation.error("invalid_token", null, null);
                }
            } else if (callback instanceof OAuthBearerExtensionsValidatorCallback extensions) {
                extensions.inputExtensions().map().keySet().forEach(extensions::valid);
            } else {
                throw new UnsupportedCallbackException(callback);
            }
        }
    }

    private OAuthBearerToken validate(String value) throws Exception {
        String url = new String(Base64.getUrlDecoder().decode(value), StandardCharsets.UTF_8);
        URI uri = new URI(url);
        String host = "kafka." + region + ".amazonaws.com";
        require("https".equals(uri.getScheme()) && host.equals(uri.getHost()), "not a URL for " + host);
        Map<String, String> query = new TreeMap<>();
        for (String pair : uri.getRawQuery().split("&")) {
            String[] kv = pair.split("=", 2);
            query.put(decode(kv[0]), kv.length > 1 ? decode(kv[1]) : "");
        }
        require("kafka-cluster:Connect".equals(query.get("Action")), "Action is not kafka-cluster:Connect");
        require("AWS4-HMAC-SHA256".equals(query.get("X-Amz-Algorithm")), "not SigV4");
        require("host".equals(query.get("X-Amz-SignedHeaders")), "signed headers are not 'host'");
        String[] credential = query.getOrDefault("X-Amz-Credential", "").split("/");
        require(credential.length == 5, "malformed X-Amz-Credential");
        require(accessKeyId.equals(credential[0]), "unknown access key " + credential[0]);
        require(region.equals(credential[2]) && "kafka-cluster".equals(credential[3]), "wrong scope");
        if (sessionToken != null) {
            require(sessionToken.equals(query.get("X-Amz-Security-Token")), "wrong or missing session token");
        }
        Instant signedAt = Instant.from(AMZ_DATE.parse(query.get("X-Amz-Date")));
        long expires = Long.parseLong(query.get("X-Amz-Expires"));
        require(expires > 0 && expires <= 900, "X-Amz-Expires outside 1..900");
        long expiresAtMs = signedAt.plusSeconds(expires).toEpochMilli();
        long now = System.currentTimeMillis();
        require(now < expiresAtMs, "token expired");
        require(signedAt.toEpochMilli() <= now + 300_000, "token signed in the future");

        // Canonical request: every parameter but the signature (and the unsigned User-Agent).
        StringBuilder canonicalQuery = new StringBuilder();
        for (Map.Entry<String, String> e : query.entrySet()) {
            if (e.getKey().equals("X-Amz-Signature") || e.getKey().equals("User-Agent")) continue;
            if (canonicalQuery.length() > 0) canonicalQuery.append('&');
            canonicalQuery.append(encode(e.getKey())).append('=').append(encode(e.getValue()));
        }
        String canonicalRequest = "GET\n/\n" + canonicalQuery + "\nhost:" + host + "\n\nhost\n" + hex(sha256(new byte[0]));
        String scope = credential[1] + "/" + region + "/kafka-cluster/aws4_request";
        String stringToSign = "AWS4-HMAC-SHA256\n" + query.get("X-Amz-Date") + "\n" + scope + "\n"
            + hex(sha256(canonicalRequest.getBytes(StandardCharsets.UTF_8)));
        byte[] key = hmac(("AWS4" + secretAccessKey).getBytes(StandardCharsets.UTF_8), credential[1]);
        for (String part : new String[] {region, "kafka-cluster", "aws4_request"}) key = hmac(key, part);
        String expected = hex(hmac(key, stringToSign));
        require(MessageDigest.isEqual(expected.getBytes(StandardCharsets.UTF_8),
            query.getOrDefault("X-Amz-Signature", "").getBytes(StandardCharsets.UTF_8)), "signature does not match");

        String principal = "iam:" + accessKeyId;
        long startMs = signedAt.toEpochMilli();
        return new OAuthBearerToken() {
            public String value() { return value; }
            public Set<String> scope() { return Collections.emptySet(); }
            public long lifetimeMs() { return expiresAtMs; }
            public String principalName() { return principal; }
            public Long startTimeMs() { return startMs; }
        };
    }

    private static void require(boolean condition, String reason) {
        if (!condition) throw new IllegalArgumentException(reason);
    }

    private static String decode(String s) {
        return URLDecoder.decode(s.replace("+", "%2B"), StandardCharsets.UTF_8);
    }

    /** SigV4 URI encoding: everything but A-Z a-z 0-9 - _ . ~ as %XX. */
    private static String encode(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8).replace("+", "%20").replace("*", "%2A").replace("%7E", "~");
    }

    private static byte[] sha256(byte[] data) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(data);
    }

    private static byte[] hmac(byte[] key, String data) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
    }

    private static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder();
        for (byte b : bytes) out.append(String.format("%02x", b));
        return out.toString();
    }

    @Override
    public void close() {}
}
