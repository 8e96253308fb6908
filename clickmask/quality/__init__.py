"""Annotation-quality prediction: features of a session log, the fitted model, simulated annotators.

Server-side analytics, not part of the client platforms install for clicking: the client only
writes the logs (:mod:`clickmask.client.session_log`). ``model`` holds the features and the
logistic model (numpy only), ``sim`` the simulated annotators and ``clickmask quality``.
"""
from .model import BAD_IOU, QualityModel, feature_matrix, is_bad, rank_sessions, review_curve, roc_auc

__all__ = ["BAD_IOU", "QualityModel", "feature_matrix", "is_bad", "rank_sessions", "review_curve", "roc_auc"]
