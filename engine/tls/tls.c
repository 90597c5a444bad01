/* placeholder: replaced by the tls module */
