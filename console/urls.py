from django.urls import include, path

from console.views import agents, audit, connections, dashboard, people, tokens

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("healthz", dashboard.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("connections/", connections.connection_list, name="connection_list"),
    path("connections/new/<str:kind>/", connections.connection_create, name="connection_create"),
    path("connections/<int:pk>/", connections.connection_detail, name="connection_detail"),
    path("connections/<int:pk>/edit/", connections.connection_edit, name="connection_edit"),
    path("connections/<int:pk>/delete/", connections.connection_delete, name="connection_delete"),
    path("connections/<int:pk>/test/", connections.connection_test, name="connection_test"),
    path("agents/", agents.agent_list, name="agent_list"),
    path("agents/new/", agents.agent_create, name="agent_create"),
    path("agents/<int:pk>/", agents.agent_detail, name="agent_detail"),
    path("agents/<int:pk>/edit/", agents.agent_edit, name="agent_edit"),
    path("agents/<int:pk>/tokens/", agents.token_issue, name="token_issue"),
    path("agents/<int:pk>/tokens/<int:token_pk>/revoke/", agents.token_revoke, name="token_revoke"),
    path("people/", people.people_list, name="people_list"),
    path("people/new/", people.person_create, name="person_create"),
    path("people/<int:pk>/", people.person_edit, name="person_edit"),
    path("people/<int:pk>/active/", people.person_set_active, name="person_set_active"),
    path("groups/", people.group_list, name="group_list"),
    path("account/tokens/", tokens.token_list, name="person_tokens"),
    path("account/tokens/new/", tokens.token_create, name="person_token_create"),
    path("account/tokens/<int:pk>/revoke/", tokens.token_revoke, name="person_token_revoke"),
    path("audit/", audit.audit_log, name="audit_log"),
    path("policies/", include("policies.urls")),
    path("audit/export.<str:fmt>", audit.audit_export, name="audit_export"),
    path("recordings/", include("recordings.urls")),
    path("", include("approvals.urls")),
]
