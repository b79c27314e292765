"""Deployment artefacts: the Helm chart, RBAC, alert rules, metrics, dashboard and the operator image."""
