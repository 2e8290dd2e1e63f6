"""What /apikey says, in every language we speak."""

from bot.i18n import add_strings

add_strings(
    {
        "en": {
            "cmd_apikey": "HTTP API keys: create, list, revoke",
            "apikey_usage": "/apikey list | /apikey create NAME [USER_ID] | /apikey revoke NAME",
            "apikey_private_only": "Create API keys in your private chat with me: a key shown in a group is a key given away.",
            "apikey_created": (
                "API key “{name}” for user {user}. It is shown only now; keep it like a password, "
                "and delete this message once you have copied it:"
            ),
            "apikey_none": "No API keys yet: /apikey create NAME",
            "apikey_revoked": "API key “{name}” revoked; requests with it are refused from now on.",
            "apikey_err_bad_name": "Give the key a name of 1-64 letters, digits, '.', '_' or '-'.",
            "apikey_err_bad_user": "The user id must be a positive number.",
            "apikey_err_taken": "A key named “{name}” exists already; pick another name.",
            "apikey_err_not_found": "No active key named “{name}” (/apikey list shows them).",
        },
        "ru": {
            "cmd_apikey": "ключи HTTP API: создать, список, отозвать",
            "apikey_usage": "/apikey list | /apikey create ИМЯ [ID_ПОЛЬЗОВАТЕЛЯ] | /apikey revoke ИМЯ",
            "apikey_private_only": "Создавайте ключи API в личном чате со мной: ключ, показанный в группе, — отданный ключ.",
            "apikey_created": (
                "Ключ API «{name}» для пользователя {user}. Он показан только сейчас; храните его как пароль "
                "и удалите это сообщение, когда скопируете ключ:"
            ),
            "apikey_none": "Ключей API пока нет: /apikey create ИМЯ",
            "apikey_revoked": "Ключ API «{name}» отозван; запросы с ним больше не принимаются.",
            "apikey_err_bad_name": "Имя ключа: от 1 до 64 латинских букв, цифр, '.', '_' или '-'.",
            "apikey_err_bad_user": "ID пользователя должен быть положительным числом.",
            "apikey_err_taken": "Ключ с именем «{name}» уже есть; выберите другое имя.",
            "apikey_err_not_found": "Активного ключа с именем «{name}» нет (/apikey list покажет ключи).",
        },
    }
)
