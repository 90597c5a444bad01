/* placeholder: replaced by the smtp module */
