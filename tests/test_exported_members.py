"""The public API is what ``__all__`` lists: pinned here, sorted, and every name importable."""

import chit
import chit.sdk
import chit.testing


def test_chit_public_names() -> None:
    assert chit.__all__ == [
        "Actor",
        "AuthError",
        "ChitError",
        "ChitForwarder",
        "InsufficientScopeError",
        "InvalidTokenError",
        "OAuth2Error",
        "Principal",
        "ServiceIdentity",
        "ServiceKey",
        "Verifier",
        "__version__",
        "attenuate",
    ]


def test_sdk_public_names() -> None:
    assert chit.sdk.__all__ == [
        "BearerAuthMiddleware",
        "ChitForwarder",
        "ChitLimits",
        "DecisionLog",
        "ExchangedToken",
        "ForwardedToken",
        "InvalidBearerRequestError",
        "JwksClient",
        "KeysUnavailableError",
        "MissingTokenError",
        "RequestAuth",
        "RevocationCheck",
        "RevocationFeed",
        "RevocationList",
        "RevocationsStaleError",
        "RevokedTokens",
        "RootKeysClient",
        "ServiceIdentity",
        "ServiceKey",
        "ServiceKeysClient",
        "ServiceToken",
        "TokenRequestError",
        "TokenVerifier",
        "VerifiedTokenCache",
        "Verifier",
        "VerifierOptions",
        "attenuate",
        "auth_error_handler",
        "authenticated",
        "bearer_token",
        "challenge",
        "current_auth",
        "current_principal",
        "current_token",
        "metrics_app",
        "principal_of",
    ]
    assert chit.testing.__all__ == ["Clock", "RootKey", "TestIssuer", "make_principal"]


def test_all_lists_are_sorted_and_resolve() -> None:
    for module in (chit, chit.sdk, chit.testing):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)


def test_the_sdk_names_at_the_top_are_the_sdk_s() -> None:
    from chit import Principal, Verifier
    from chit.policy.principals import Principal as PolicyPrincipal

    assert Verifier is chit.sdk.Verifier
    assert Principal is PolicyPrincipal
    assert chit.ServiceIdentity is chit.sdk.ServiceIdentity
    assert chit.attenuate is chit.sdk.attenuate
    assert chit.ChitForwarder is chit.sdk.ChitForwarder
    assert "Verifier" in dir(chit)
