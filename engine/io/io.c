/* placeholder: replaced by the io module */
