"""The SQLAlchemy implementation of chit's storage: one module per aggregate, combined in ``Store``."""
