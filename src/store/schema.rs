//! diesel table definitions, shared by both backends (migrations keep them identical).

diesel::table! {
    clients (client_id) {
        client_id -> Text,
        name -> Text,
        secret_hash -> Nullable<Text>,
        auth_method -> Text,
        redirect_uris -> Text,
        post_logout_redirect_uris -> Text,
        grant_types -> Text,
        scopes -> Text,
        resources -> Text,
        skip_consent -> Bool,
        created_at -> BigInt,
        required_role -> Nullable<Text>,
        allowed_origins -> Text,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        roles -> Text,
        password_hash -> Nullable<Text>,
        locked -> Bool,
        failed_logins -> Integer,
        locked_until -> Nullable<BigInt>,
        created_at -> BigInt,
        phone_number -> Nullable<Text>,
        address -> Nullable<Text>,
    }
}

diesel::table! {
    sessions (id_hash) {
        id_hash -> Text,
        user_id -> Text,
        auth_time -> BigInt,
        amr -> Text,
        last_seen -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        user_id -> Text,
        session_hash -> Text,
        scope -> Text,
        nonce -> Nullable<Text>,
        code_challenge -> Nullable<Text>,
        auth_time -> BigInt,
        amr -> Text,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
        access_jti -> Nullable<Text>,
        access_exp -> Nullable<BigInt>,
        refresh_family -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(refresh_tokens, users);

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        family_id -> Text,
        client_id -> Text,
        user_id -> Text,
        session_hash -> Text,
        scope -> Text,
        offline -> Bool,
        auth_time -> BigInt,
        amr -> Text,
        issued_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked -> Bool,
        access_jti -> Nullable<Text>,
        access_exp -> Nullable<BigInt>,
        replaced_by -> Nullable<Text>,
    }
}

diesel::table! {
    consents (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        scope -> Text,
        granted_at -> BigInt,
    }
}

diesel::table! {
    login_ip_failures (ip) {
        ip -> Text,
        window_start -> BigInt,
        failures -> Integer,
    }
}

diesel::table! {
    user_identities (provider, subject) {
        provider -> Text,
        subject -> Text,
        issuer -> Text,
        user_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    upstream_logins (state_hash) {
        state_hash -> Text,
        provider -> Text,
        browser_hash -> Text,
        pkce_verifier -> Text,
        nonce -> Text,
        request -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        consumed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    pending_links (link_hash) {
        link_hash -> Text,
        browser_hash -> Text,
        provider -> Text,
        subject -> Text,
        issuer -> Text,
        name -> Nullable<Text>,
        email -> Text,
        user_id -> Text,
        request -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    user_totp (user_id) {
        user_id -> Text,
        secret_sealed -> Text,
        confirmed -> Bool,
        last_step -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    recovery_codes (user_id, code_hash) {
        user_id -> Text,
        code_hash -> Text,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    pending_mfa (id_hash) {
        id_hash -> Text,
        user_id -> Text,
        first_factor -> Text,
        browser_hash -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        at -> BigInt,
        event -> Text,
        user_id -> Nullable<Text>,
        client_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        request_id -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    password_resets (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}
