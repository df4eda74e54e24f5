from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    """People are created by admins or by single sign-on, never by open sign-up."""

    def is_open_for_signup(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Single sign-on creates the person on first login; groups sync on every login."""

    def is_open_for_signup(self, request, sociallogin) -> bool:  # type: ignore[no-untyped-def]
        return True
