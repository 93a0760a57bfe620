from sqlmodel import Session, SQLModel, create_engine

from shared.apikeys import ApiKey, create_api_key, verify_api_key


def test_keys_are_hashed_scoped_and_revocable():
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[ApiKey.__table__])
    with Session(engine) as session:
        row, token = create_api_key(session, "crm", ["contacts:read"])
        session.commit()
        assert token.startswith("msk_") and token.split("_", 2)[2] not in row.secret_hash
        key = verify_api_key(session, token)
        assert key is not None and key.scope_set() == {"contacts:read"}
        assert verify_api_key(session, token + "x") is None
        assert verify_api_key(session, "garbage") is None
        row.revoked = True
        session.add(row)
        session.commit()
        assert verify_api_key(session, token) is None
